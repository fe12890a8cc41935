"""A speaker-verification network on log-mels, trained apart from the VC model (``train.speaker_critic``).

The VC model's own speaker encoder is trained only to feed the decoder's AdaIN layers. It scores the
shipped model's conversions at 0.98-0.99 against the target while an independent verifier scores them
at about 0.77: it cannot see the source voice that leaks through the content code, so it cannot teach
the model to remove it. This network is trained for the other job, telling speakers apart (an x-vector
style TDNN with statistics pooling and an additive-margin softmax over the training speakers). Frozen,
it scores a conversion against a real segment of the target voice, and the VC trainer turns that score
into a loss (:mod:`voiceconv.training.speaker_critic`). It is ours, trained on the training corpus: the
judges never enter training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from voiceconv import checkpoint
from voiceconv.config import from_dict, to_dict
from voiceconv.errors import VoiceconvError
from voiceconv.features import MelConfig
from voiceconv.models.layers import check_dilated_stack, dilated_conv_stack, frozen, masked_mean
from voiceconv.models.vc_model import default_device

KIND = "speaker_critic"


@dataclass
class SpeakerCriticConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    channels: int = 256  # TDNN width (x-vector: 512; halved for the CPU)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 1)  # x-vector frame layers
    dilations: tuple[int, ...] = (1, 2, 3, 1)
    embedding_dim: int = 192  # the pooled, unit-length speaker embedding
    log_mel_offset: float = 5.0  # log-mels are shifted and scaled to about zero mean, unit spread
    log_mel_scale: float = 2.5

    def __post_init__(self) -> None:
        check_dilated_stack("speaker critic", self.kernel_sizes, self.dilations)


class SpeakerCritic(nn.Module):
    """``embed(mel (B, n_mels, T), mask (B, T) | None) -> (B, embedding_dim)`` unit vectors."""

    def __init__(self, config: SpeakerCriticConfig, n_speakers: int = 0):
        super().__init__()
        self.config = config
        self.frames = dilated_conv_stack(config.mel.n_mels, config.channels, config.kernel_sizes, config.dilations,
                                         nn.ReLU)
        self.embedding = nn.Linear(2 * config.channels, config.embedding_dim)  # from mean and std pooling
        self.n_speakers = n_speakers
        # Class centres of the additive-margin softmax; only training uses them.
        self.centres = nn.Parameter(torch.randn(n_speakers, config.embedding_dim) * 0.1) if n_speakers else None

    def embed(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw log-mel ``(B, n_mels, T)``, optional ``mask (B, T)`` of real frames -> unit vectors ``(B, D)``.

        The pooling and the embedding run in float32 even under autocast: a cosine near 0.8 would move
        in steps of 0.004 in bf16.
        """
        n_mels = self.config.mel.n_mels
        if mel.dim() != 3 or mel.shape[1] != n_mels:
            raise VoiceconvError(f"speaker critic: mel must be (batch, {n_mels}, frames), got {tuple(mel.shape)}")
        if mask is not None and tuple(mask.shape) != (mel.shape[0], mel.shape[2]):
            raise VoiceconvError(f"speaker critic: mask must be (batch, frames) = {(mel.shape[0], mel.shape[2])}, "
                                 f"got {tuple(mask.shape)}")
        x = self.frames((mel + self.config.log_mel_offset) / self.config.log_mel_scale).float()  # (B, C, T)
        mean = masked_mean(x, mask)  # (B, C)
        variance = masked_mean((x - mean.unsqueeze(-1)).square(), mask)
        # The floor keeps the square root's gradient finite on a constant (e.g. silent) channel.
        pooled = torch.cat([mean, (variance + 1e-5).sqrt()], dim=1)  # (B, 2C)
        with torch.autocast(pooled.device.type, enabled=False):
            return F.normalize(self.embedding(pooled), dim=-1)

    def forward(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed(mel, mask)

    def logits(self, embedding: torch.Tensor, labels: torch.Tensor, margin: float, scale: float) -> torch.Tensor:
        """Additive-margin softmax logits ``(B, n_speakers)``: cosines to the class centres, the true
        class's lowered by ``margin``, all times ``scale`` (CosFace / AM-softmax)."""
        if self.centres is None:
            raise VoiceconvError("speaker critic: built without training speakers; it can only embed")
        cosines = embedding @ F.normalize(self.centres, dim=-1).T  # (B, n_speakers)
        return scale * (cosines - margin * F.one_hot(labels, self.n_speakers).to(cosines.dtype))

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """``model.safetensors`` + ``config.json`` (kind ``speaker_critic``), without the class centres."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("centres")}
        return checkpoint.save_pretrained(directory, KIND, to_dict(self.config), state, extra=extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None) -> SpeakerCritic:
        """A frozen critic in eval mode (its batch norms use their running statistics)."""
        meta, state_dict = checkpoint.load_pretrained(directory, KIND)
        critic = cls(from_dict(SpeakerCriticConfig, meta.get("config")))
        critic.load_state_dict(state_dict)
        return frozen(critic).to(device if device is not None else default_device())
