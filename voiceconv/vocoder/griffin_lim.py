"""Griffin-Lim: the non-neural fallback and test baseline (never the default).

Log-mel -> linear magnitude by the pseudo-inverse of the mel filterbank (clamped at zero), then
``n_iter`` iterations of fast Griffin-Lim (Perraudin et al. 2013: plain Griffin-Lim plus a
momentum term) on the mel front end's own frame grid, so ``T`` frames give ``T * hop`` samples.
It needs no weights, which is why it is used when no neural vocoder is installed; the output
sounds phasey ("robotic") and :class:`voiceconv.vocoder.model.Vocoder` says so in a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from voiceconv.features import MelConfig, mel_basis
from voiceconv.vocoder.spectral import griffin_lim_phase, istft


@dataclass
class GriffinLimConfig:
    n_iter: int = 32  # 32 iterations: RTF ~0.02 on 2 CPU cores; quality improves little beyond ~60
    momentum: float = 0.99  # fast Griffin-Lim alpha (Perraudin et al. 2013; torchaudio's default)
    seed: int = 0  # the random initial phase is seeded, so the output is deterministic


class GriffinLim(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> waveform ``(B, T * hop)``; no trainable parameters."""

    def __init__(self, config: GriffinLimConfig, mel: MelConfig):
        super().__init__()
        self.config, self.mel = config, mel
        # Least-squares inverse of the mel filterbank: (n_fft // 2 + 1, n_mels).
        inverse = torch.linalg.pinv(torch.from_numpy(mel_basis(mel)).double()).float()
        self.register_buffer("inverse_basis", inverse, persistent=False)
        self.register_buffer("window", torch.hann_window(mel.win_length), persistent=False)

    @property
    def receptive_field_frames(self) -> int:
        # Each iteration spreads information by one window (n_fft / hop frames) each way, but the
        # influence decays fast; chunked decoding only needs enough context to hide the seams.
        return 64

    def magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """Linear magnitude ``(B, n_fft // 2 + 1, T)`` estimated from log-mel ``(B, n_mels, T)``."""
        return torch.matmul(self.inverse_basis, torch.exp(mel.float())).clamp(min=0.0)

    def forward(self, mel: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """``mel (B, n_mels, T)`` -> ``audio (B, T * hop)``."""
        c, m = self.config, self.mel
        magnitude = self.magnitude(mel)
        generator = torch.Generator().manual_seed(c.seed if seed is None else seed)
        phase = torch.rand(magnitude.shape, generator=generator) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(magnitude), phase.to(magnitude.device))
        angles = griffin_lim_phase(magnitude, angles, c.n_iter, c.momentum, m.n_fft, m.hop_length, self.window)
        return istft(magnitude * angles, m.n_fft, m.hop_length, self.window)
