"""VCModel: the AdaIN-VC auto-encoder and its optional VQ and adversarial parts, built from one config.

In training the same utterance is both source and reference: the speaker encoder summarises it,
the content encoder codes it frame by frame, and the decoder must rebuild it. The bottleneck (IN,
KL, optionally VQ and an adversarial speaker classifier) keeps the speaker out of the content code,
so at conversion time the speaker vector of another voice takes over.

``forward`` returns a dict of ``"mel_hat"``, ``"loss/*"`` and ``"metric/*"``; the trainer weighs the
losses with the config's ``lambdas`` and never needs to know which parts are switched on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from voiceconv import checkpoint
from voiceconv.config import from_dict, to_dict
from voiceconv.errors import CheckpointError, ConfigError, VoiceconvError
from voiceconv.features import MelConfig
from voiceconv.models.content_encoder import (
    ContentEncoder,
    ContentEncoderConfig,
    kl_divergence,
    sample_posterior,
)
from voiceconv.models.decoder import Decoder, DecoderConfig
from voiceconv.models.quantizer import QuantizerConfig, VectorQuantizer
from voiceconv.models.speaker_classifier import SpeakerClassifier, SpeakerClassifierConfig
from voiceconv.models.speaker_encoder import SpeakerEncoder, SpeakerEncoderConfig

log = logging.getLogger(__name__)

KIND = "vc_model"


@dataclass
class VCConfig:
    mel: MelConfig = field(default_factory=MelConfig)  # HiFi-GAN 22.05 kHz / 80-band mel (features.py)
    content_encoder: ContentEncoderConfig = field(default_factory=ContentEncoderConfig)  # AdaIN-VC ContentEncoder
    speaker_encoder: SpeakerEncoderConfig = field(default_factory=SpeakerEncoderConfig)  # AdaIN-VC SpeakerEncoder
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # AdaIN-VC Decoder
    quantizer: QuantizerConfig | None = None  # None = plain AdaIN-VC; set for the VQ variants (VQMIVC-style)
    speaker_classifier: SpeakerClassifierConfig | None = None  # None = no adversary; set for the adv variants


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean absolute error of ``(B, n_mels, T)`` tensors over the real frames of ``mask (B, T)`` (None: all)."""
    error = (prediction - target).abs()  # (B, n_mels, T)
    if mask is None:
        return error.mean()
    weight = mask.unsqueeze(1).to(error.dtype)  # (B, 1, T)
    return (error * weight).sum() / (weight.sum() * error.shape[1]).clamp_min(1.0)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class VCModel(nn.Module):
    """AdaIN-VC family voice-conversion model. All public methods take and return raw log-mels.

    ``n_speakers`` is the number of training speakers (virtual speakers when VTLP augmentation is
    on); only the adversarial speaker classifier needs it.
    """

    def __init__(self, config: VCConfig | None = None, n_speakers: int = 0):
        super().__init__()
        config = config or VCConfig()
        self.config = config
        self.n_speakers = int(n_speakers)
        n_mels = config.mel.n_mels
        stride = config.content_encoder.total_stride
        if stride != config.decoder.total_upsample:
            raise ConfigError(
                f"content_encoder.subsample multiplies to {stride} but decoder.upsample to "
                f"{config.decoder.total_upsample}; they must match so the decoder restores the frame rate"
            )
        if config.quantizer is not None and config.content_encoder.variational:
            raise ConfigError(
                "the VQ variant quantises the posterior mean, so the VAE sampling and KL are unused; "
                "set content_encoder.variational: false together with quantizer"
            )
        if config.speaker_classifier is not None and self.n_speakers < 2:
            raise ConfigError(
                f"speaker_classifier needs n_speakers >= 2 training speakers, got {self.n_speakers}; "
                "pass n_speakers to VCModel or remove speaker_classifier from the model config"
            )
        self.content_encoder = ContentEncoder(n_mels, config.content_encoder)
        self.speaker_encoder = SpeakerEncoder(n_mels, config.speaker_encoder)
        content_dim = config.content_encoder.out_channels
        self.decoder = Decoder(content_dim, config.speaker_encoder.out_channels, n_mels, config.decoder)
        self.quantizer = VectorQuantizer(content_dim, config.quantizer) if config.quantizer is not None else None
        self.speaker_classifier = (
            SpeakerClassifier(content_dim, self.n_speakers, config.speaker_classifier)
            if config.speaker_classifier is not None
            else None
        )
        # Per-mel-bin statistics of the training corpus, stored in the checkpoint so inference needs
        # no side file (AdaIN-VC keeps them in attr.pkl). Identity until set_normalization is called.
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    # ----------------------------------------------------------------------------------------------
    # normalisation and input checks

    @property
    def mel_config(self) -> MelConfig:
        return self.config.mel

    @property
    def speaker_dim(self) -> int:
        return self.config.speaker_encoder.out_channels

    @property
    def content_dim(self) -> int:
        return self.config.content_encoder.out_channels

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set per-mel-bin ``mean (n_mels,)`` and ``std (n_mels,)`` of the training log-mels."""
        n_mels = self.mel_config.n_mels
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != n_mels or std.numel() != n_mels:
            raise VoiceconvError(
                f"normalisation stats must have {n_mels} values (one per mel bin), got {mean.numel()} and {std.numel()}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise VoiceconvError("normalisation stats must be finite with std > 0; recompute them from the corpus")
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std)

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        """Raw log-mel ``(B, n_mels, T)`` -> zero-mean unit-variance per bin."""
        return (mel - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        return mel * self.mel_std[:, None] + self.mel_mean[:, None]

    def _check_mel(self, mel: torch.Tensor, name: str = "mel") -> None:
        n_mels = self.mel_config.n_mels
        if mel.dim() != 3 or mel.shape[1] != n_mels or mel.shape[2] < 1:
            raise VoiceconvError(
                f"{name} must be a (batch, {n_mels}, frames) log-mel with at least one frame, got shape "
                f"{tuple(mel.shape)}; compute it with voiceconv.features.MelSpectrogram(model.mel_config)"
            )

    # ----------------------------------------------------------------------------------------------
    # public inference API

    def encode_content(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel (B, n_mels, T)`` -> content code ``(B, C, ceil(T / stride))``: posterior mean, quantised if VQ is on.

        ``stride`` is the content encoder's ``total_stride`` (8 in AdaIN-VC).
        """
        self._check_mel(mel)
        mean, _, _ = self.content_encoder(self.normalize(mel))
        return self.quantizer.quantize(mean) if self.quantizer is not None else mean

    def embed(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mel (B, n_mels, T)``, any ``T >= 1``, optional ``mask (B, T)`` -> speaker vectors ``(B, D)``."""
        self._check_mel(mel)
        return self.speaker_encoder(self.normalize(mel), mask)

    def embed_references(self, mels: list[torch.Tensor]) -> torch.Tensor:
        """Several reference clips ``[(n_mels, T_i), ...]`` of one speaker -> their mean vector ``(D,)``."""
        if not mels:
            raise VoiceconvError("give at least one reference clip to embed a speaker")
        # Clips have different lengths, so each is embedded alone (no padding to bias the average).
        vectors = [self.embed(mel.unsqueeze(0) if mel.dim() == 2 else mel).mean(dim=0) for mel in mels]
        return torch.stack(vectors).mean(dim=0)

    def decode(self, content: torch.Tensor, speaker: torch.Tensor, length: int) -> torch.Tensor:
        """``content (B, C, T')``, ``speaker (B, D)`` -> raw log-mel ``(B, n_mels, length)``."""
        if content.dim() != 3 or content.shape[1] != self.content_dim:
            raise VoiceconvError(f"content must be (batch, {self.content_dim}, frames), got {tuple(content.shape)}")
        speaker = self._speaker_batch(speaker, content.shape[0])
        return self.denormalize(self.decoder(content, speaker, int(length)))

    def convert(self, source_mel: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Re-voice ``source_mel (B, n_mels, T)`` as ``speaker (B, D)`` (or ``(D,)`` for all) -> ``(B, n_mels, T)``."""
        self._check_mel(source_mel, "source_mel")
        return self.decode(self.encode_content(source_mel), speaker, source_mel.shape[-1])

    def _speaker_batch(self, speaker: torch.Tensor, batch: int) -> torch.Tensor:
        if speaker.dim() == 1:
            speaker = speaker.unsqueeze(0)  # (1, D)
        if speaker.dim() != 2 or speaker.shape[1] != self.speaker_dim or speaker.shape[0] not in (1, batch):
            raise VoiceconvError(
                f"speaker must be ({self.speaker_dim},) or (batch, {self.speaker_dim}) from model.embed, "
                f"got {tuple(speaker.shape)}"
            )
        return speaker.expand(batch, -1)  # (B, D): one vector may serve the whole batch

    # ----------------------------------------------------------------------------------------------
    # training

    def forward(self, mel: torch.Tensor, speaker_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, step: int = 0, content_mel: torch.Tensor | None = None,
                speaker_mel: torch.Tensor | None = None, speaker_mask: torch.Tensor | None = None,
                cycle_partner: torch.Tensor | None = None,
                cycle_detach: bool = False, cycle_code: bool = False, critic_content_gradient: bool = True,
                critic_decoder_gradient: bool | str = True,
                invariance: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
                ) -> dict[str, torch.Tensor]:
        """Reconstruct ``mel (B, n_mels, T)`` (raw log-mel) and return outputs, losses and metrics.

        ``speaker_ids (B,)`` feed the adversarial classifier (skipped when None); ``mask (B, T)``
        marks real frames; ``step`` drives the classifier's reversal schedule. ``mel`` is always
        the target. The content encoder reads ``content_mel`` (same shape; e.g. ``mel`` through a
        noisy channel, for de-noising) and the speaker encoder ``speaker_mel (B, n_mels, T_ref)``
        with ``speaker_mask (B, T_ref)`` (e.g. another segment of the same speaker); each defaults
        to ``mel`` itself, as in AdaIN-VC. ``cycle_partner (n,)`` (batch indices, ``n <= B``) adds
        ``loss/cycle``: utterance ``i < n`` converted to the voice of utterance ``cycle_partner[i]``
        and back (:mod:`voiceconv.training.cycle`); ``cycle_detach`` stops that term's gradient at the
        converted mel (``CycleConfig.detach_conversion``); ``cycle_code`` adds ``loss/cycle_code``, the
        content code read off the converted mel against the source's (``CycleConfig.code_consistency``,
        gradient always through the conversion). ``invariance`` is ``(clean, corrupted, mask)``, a
        reference segment ``(n, n_mels, T_ref)`` (raw log-mel) and the same segment through a recording
        channel, with ``mask (n, T_ref)`` or None; it adds ``loss/speaker_invariance``, the mean of
        ``1 - cos`` between the corrupted segment's speaker vector and the clean one's, held fixed
        (:mod:`voiceconv.training.speaker_invariance`). Keys: ``mel_hat``
        (raw log-mel), ``loss/rec``, ``loss/kl`` (0 without the VAE), plus ``loss/vq_commit`` and
        ``loss/adv`` when those modules exist, ``loss/cycle`` (and ``loss/cycle_code``) with partners,
        ``loss/speaker_invariance`` with a pair, ``cycle_converted`` (the normalised conversions ``(n, n_mels,
        T)``) with partners, ``critic_converted`` (the same conversions decoded with the decoder's weights held,
        all but its AdaIN speaker projections with ``"conditioning"``) when ``critic_decoder_gradient`` is not True,
        and ``metric/*``.
        """
        self._check_mel(mel)
        if mask is not None and mask.shape != (mel.shape[0], mel.shape[2]):
            expected = (mel.shape[0], mel.shape[2])
            raise VoiceconvError(f"mask must be (batch, frames) = {expected}, got {tuple(mask.shape)}")
        x = self.normalize(mel)
        if content_mel is not None and content_mel.shape != mel.shape:
            raise VoiceconvError(f"content_mel must have the target's shape {tuple(mel.shape)}, "
                                 f"got {tuple(content_mel.shape)}")
        if speaker_mel is None:
            speaker = self.speaker_encoder(x, mask)
        else:
            self._check_mel(speaker_mel, "speaker_mel")
            speaker = self.speaker_encoder(self.normalize(speaker_mel), speaker_mask)
        content_input = x if content_mel is None else self.normalize(content_mel)
        mean, logvar, content_mask = self.content_encoder(content_input, mask)
        out: dict[str, torch.Tensor] = {}
        if logvar is not None:
            # Sample in training only: evaluation (and validation loss) uses the deterministic mean.
            content = sample_posterior(mean, logvar) if self.training else mean
            if content_mask is not None:
                # Padded frames keep the mean: their log-variance has no KL to hold it, and noise there
                # would leak into real frames through the decoder's convolutions.
                content = torch.where(content_mask.unsqueeze(1) > 0, content, mean)
            out["loss/kl"] = kl_divergence(mean, logvar, content_mask)
        else:
            content = mean
            # Constant zero so every variant reports the same loss keys (no gradient flows through it).
            out["loss/kl"] = mean.new_zeros(())
        if self.quantizer is not None:
            content, commit, metrics = self.quantizer(content, content_mask)
            out["loss/vq_commit"] = commit
            out.update(metrics)
        if self.speaker_classifier is not None and speaker_ids is not None:
            if int(speaker_ids.max()) >= self.n_speakers or int(speaker_ids.min()) < 0:
                raise VoiceconvError(
                    f"speaker id {int(speaker_ids.max())} is outside the model's {self.n_speakers} training speakers; "
                    "build VCModel with n_speakers covering every (virtual) speaker id"
                )
            loss, metrics = self.speaker_classifier.adversarial_loss(content, speaker_ids, step, content_mask)
            out["loss/adv"] = loss
            out.update(metrics)
        x_hat = self.decoder(content, speaker, mel.shape[-1], content_mask)
        # L1 in the normalised domain, as AdaIN-VC (its lambda_rec = 10 assumes normalised mels).
        out["loss/rec"] = masked_l1(x_hat, x, mask)
        if cycle_partner is not None:
            out.update(self._cycle_losses(content, mean, speaker, cycle_partner, x, mask, content_mask,
                                          detach=cycle_detach, code=cycle_code,
                                          content_gradient=critic_content_gradient,
                                          decoder_gradient=critic_decoder_gradient))
        if invariance is not None:
            out["loss/speaker_invariance"] = self._invariance_loss(*invariance)
        out["mel_hat"] = self.denormalize(x_hat)
        return out

    def _invariance_loss(self, clean: torch.Tensor, corrupted: torch.Tensor,
                         mask: torch.Tensor | None) -> torch.Tensor:
        """Mean ``1 - cos`` of the speaker vectors of ``corrupted`` and ``clean`` ``(n, n_mels, T)``;
        the clean vector is a fixed anchor: the gradient flows only through the corrupted pass."""
        self._check_mel(clean, "invariance clean mel")
        if corrupted.shape != clean.shape or (mask is not None and mask.shape != (clean.shape[0], clean.shape[2])):
            raise VoiceconvError(f"invariance needs a corrupted mel of the clean one's shape {tuple(clean.shape)} "
                                 f"and a (n, frames) mask; got {tuple(corrupted.shape)} and "
                                 f"{None if mask is None else tuple(mask.shape)}")
        with torch.no_grad():
            anchor = self.speaker_encoder(self.normalize(clean), mask)
        vector = self.speaker_encoder(self.normalize(corrupted), mask)
        return (1.0 - nn.functional.cosine_similarity(vector.float(), anchor.float(), dim=1)).mean()

    def _cycle_losses(self, content: torch.Tensor, mean: torch.Tensor, speaker: torch.Tensor,
                      partner: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None,
                      content_mask: torch.Tensor | None, detach: bool = False,
                      code: bool = False, content_gradient: bool = True,
                      decoder_gradient: bool | str = True) -> dict[str, torch.Tensor]:
        """``loss/cycle``: L1 between ``x[:n]`` (normalised ``(n, n_mels, T)``) and its round trip through
        the voices ``speaker[partner]`` and back to ``speaker[:n]``, from the content code ``content
        (B, C, T')``. ``detach``: no gradient of that term through the conversion (the first decoder pass
        and what feeds it). ``code`` adds ``loss/cycle_code``: L1 between the content encoder's mean on
        the converted mel and ``mean (B, C, T')``, the posterior mean the conversion was decoded from
        (so of the content encoder's input: warped or through a channel when training does that),
        held fixed as the target, with the gradient through the conversion. It asks the conversion to
        keep what the content encoder reads (the words); that code carries less of the source's voice
        than the mel does, but not none, so it also rewards keeping some of it. Also returns
        ``cycle_converted``, the normalised conversions ``(n, n_mels, T)`` with their gradient; without
        ``content_gradient`` it is decoded again from the content code detached (one more decoder pass),
        so that a term on it reaches the decoder and the speaker encoder but not the content encoder. Without
        ``decoder_gradient`` it also returns ``critic_converted``: the conversion decoded once more with the
        decoder's parameters detached, so that a term on it cannot change the decoder (the others still do);
        with ``decoder_gradient="conditioning"`` all but the AdaIN speaker projections (``*.affine.*``) are detached."""
        batch = content.shape[0]
        if partner.dim() != 1 or not 1 <= partner.numel() <= batch or int(partner.min()) < 0 \
                or int(partner.max()) >= batch:
            raise VoiceconvError(f"cycle_partner must be (n,) batch indices with 1 <= n <= {batch}, "
                                 f"got shape {tuple(partner.shape)}")
        if not (isinstance(decoder_gradient, bool) or decoder_gradient == "conditioning"):
            raise VoiceconvError(f"decoder_gradient must be True, False or 'conditioning', got {decoder_gradient!r}")
        n, frames = partner.numel(), x.shape[-1]
        first = slice(0, n)
        sub_mask = mask[first] if mask is not None else None
        sub_content_mask = content_mask[first] if content_mask is not None else None
        converted = self.decoder(content[first], speaker[partner], frames, sub_content_mask)  # (n, n_mels, T)
        cycle_mean, _, cycle_content_mask = self.content_encoder(converted.detach() if detach else converted,
                                                                 sub_mask)
        cycle_code = self.quantizer(cycle_mean, cycle_content_mask)[0] if self.quantizer is not None else cycle_mean
        back = self.decoder(cycle_code, speaker[first], frames, cycle_content_mask)  # (n, n_mels, T)
        # The conversion itself (normalised) goes back too, for terms that judge it (train.speaker_critic and
        # train.phonetic).
        out = {"loss/cycle": masked_l1(back, x[first], sub_mask), "cycle_converted": converted}
        if not content_gradient:
            out["cycle_converted"] = self.decoder(content[first].detach(), speaker[partner], frames,
                                                  sub_content_mask)  # (n, n_mels, T)
        if decoder_gradient is not True:
            # "conditioning" leaves the AdaIN speaker projections out of the held set: functional_call uses
            # the module's own (trainable) parameters for every name not given.
            conditioning_free = decoder_gradient == "conditioning"
            held = {name: parameter.detach() for name, parameter in self.decoder.named_parameters()
                    if not (conditioning_free and ".affine." in name)}
            code_in = content[first] if content_gradient else content[first].detach()
            out["critic_converted"] = torch.func.functional_call(
                self.decoder, held, (code_in, speaker[partner], frames, sub_content_mask))  # (n, n_mels, T)
        if code:
            if detach:
                # A second content-encoder pass: this term's gradient must reach the conversion, the
                # round trip's must not.
                cycle_mean = self.content_encoder(converted, sub_mask)[0]
            out["loss/cycle_code"] = masked_l1(cycle_mean, mean[first].detach(), sub_content_mask)
        return out

    # ----------------------------------------------------------------------------------------------
    # checkpoints

    def n_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (kind ``vc_model``; config plus ``n_speakers``)."""
        return checkpoint.save_pretrained(
            directory, KIND, to_dict(self.config), self.state_dict(), extra={"n_speakers": self.n_speakers}
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None,
                        mel_config: MelConfig | None = None) -> VCModel:
        """Load a model directory in eval mode on ``device`` (None: CUDA if available, else CPU).

        With ``mel_config`` (e.g. the vocoder's), a different mel front end raises ``MelMismatchError``.
        """
        meta, state_dict = checkpoint.load_pretrained(directory, KIND)
        config = from_dict(VCConfig, meta.get("config"))
        if mel_config is not None:
            config.mel.check_compatible(mel_config, "VC model", "given mel config")
        model = cls(config, n_speakers=int(meta.get("n_speakers", 0)))
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{directory}: weights do not match the config (missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}); the checkpoint is from another model version"
            )
        model.eval()
        return model.to(device if device is not None else default_device())
