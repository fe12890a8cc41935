"""A small phone recogniser on log-mels, trained apart from the VC model (``train.phonetic``).

The speaker critic (:mod:`voiceconv.models.speaker_critic`) taught conversions to sound like the target,
and they lost words on the way (round 21: the judge's similarity +0.017, its WER +11 points per pair): the
decoder, pushed towards the target voice, blurred the phones, and nothing in training listened for them.
The reconstruction and cycle terms compare mels, and the content code read back off a conversion
(``cycle.code_consistency``) also carries some of the source voice, so asking for it also pulls the voice
back. A recogniser is trained for the other job, telling phones apart whoever speaks them: frozen, it
reads a conversion and its source frame by frame, and the VC trainer asks the two readings to agree
(:mod:`voiceconv.training.phonetic`). It is ours, trained with CTC on the training corpus's transcripts
(phonemised by the recipe): the judges never enter training.

The network is convolutional (no recurrence: a CPU step must stay cheap, and the term runs every VC
step): per-utterance mean normalisation of each mel bin (which takes out the channel's and part of the
voice's fixed colouring), then dilated convolutions with a receptive field of about half a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from voiceconv import checkpoint
from voiceconv.config import from_dict, to_dict
from voiceconv.errors import VoiceconvError
from voiceconv.features import MelConfig
from voiceconv.models.layers import check_dilated_stack, dilated_conv_stack, frozen, masked_mean
from voiceconv.models.vc_model import default_device

KIND = "phone_recognizer"
BLANK = 0  # the CTC blank's index; phone k of ``phones`` is class k + 1


@dataclass
class PhoneRecognizerConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    phones: tuple[str, ...] = ()  # the phone inventory (class k + 1 is phones[k]; class 0 is the blank)
    channels: int = 256
    kernel_sizes: tuple[int, ...] = (5, 5, 5, 5, 3)
    dilations: tuple[int, ...] = (1, 2, 4, 2, 1)  # receptive field 1 + 4*(1+2+4+2) + 2 = 39 frames, 0.45 s
    log_mel_scale: float = 2.5  # mean-normalised log-mels are divided by it (about unit spread)

    def __post_init__(self) -> None:
        check_dilated_stack("phone recogniser", self.kernel_sizes, self.dilations)
        if not self.phones or len(set(self.phones)) != len(self.phones):
            raise VoiceconvError("phone recogniser: phones must be a non-empty list of distinct symbols")
        self.phones = tuple(self.phones)

    @property
    def n_classes(self) -> int:
        return len(self.phones) + 1


class PhoneRecognizer(nn.Module):
    """``log_probs(mel (B, n_mels, T), mask (B, T) | None) -> (B, T, n_phones + 1)`` frame log-posteriors."""

    def __init__(self, config: PhoneRecognizerConfig):
        super().__init__()
        self.config = config
        self.frames = dilated_conv_stack(config.mel.n_mels, config.channels, config.kernel_sizes, config.dilations,
                                         nn.GELU)
        self.output = nn.Conv1d(config.channels, config.n_classes, 1)

    def log_probs(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw log-mel ``(B, n_mels, T)``, optional ``mask (B, T)`` of real frames -> log-posteriors
        ``(B, T, n_classes)`` in float32 (the mean normalisation uses real frames only)."""
        n_mels = self.config.mel.n_mels
        if mel.dim() != 3 or mel.shape[1] != n_mels:
            raise VoiceconvError(f"phone recogniser: mel must be (batch, {n_mels}, frames), got {tuple(mel.shape)}")
        if mask is not None and tuple(mask.shape) != (mel.shape[0], mel.shape[2]):
            raise VoiceconvError(f"phone recogniser: mask must be (batch, frames) = "
                                 f"{(mel.shape[0], mel.shape[2])}, got {tuple(mask.shape)}")
        centred = (mel - masked_mean(mel, mask).unsqueeze(-1)) / self.config.log_mel_scale  # (B, n_mels, T)
        if mask is not None:
            centred = centred * mask.unsqueeze(1).to(centred.dtype)  # padding reads as the mean
        logits = self.output(self.frames(centred)).float()  # (B, n_classes, T)
        return logits.transpose(1, 2).log_softmax(dim=-1)  # (B, T, n_classes)

    def forward(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_probs(mel, mask)

    def greedy_decode(self, log_probs: torch.Tensor, length: int | None = None) -> list[str]:
        """Best-path CTC decoding of one utterance's ``log_probs (T, n_classes)``: repeats merged, blanks
        dropped; returns phone symbols."""
        best = log_probs[:length].argmax(dim=-1).tolist()
        phones, previous = [], BLANK
        for index in best:
            if index != previous and index != BLANK:
                phones.append(self.config.phones[index - 1])
            previous = index
        return phones

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """``model.safetensors`` + ``config.json`` (kind ``phone_recognizer``, with the phone inventory)."""
        return checkpoint.save_pretrained(directory, KIND, to_dict(self.config), self.state_dict(), extra=extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None) -> PhoneRecognizer:
        """A frozen recogniser in eval mode (its batch norms use their running statistics)."""
        meta, state_dict = checkpoint.load_pretrained(directory, KIND)
        recognizer = cls(from_dict(PhoneRecognizerConfig, meta.get("config")))
        recognizer.load_state_dict(state_dict)
        return frozen(recognizer).to(device if device is not None else default_device())
