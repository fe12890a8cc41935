"""GAN discriminators for vocoder training: multi-period (HiFi-GAN) and multi-resolution STFT (UnivNet).

The multi-period discriminator folds the waveform into ``(L / p, p)`` for each period ``p`` so
that 2-D convolutions see samples that are ``p`` apart (periodic structure: pitch, harmonics);
the multi-resolution discriminator looks at STFT magnitudes at several time/frequency trade-offs
(the spectral detail HiFi-GAN's multi-scale discriminator sees only indirectly). Vocos uses the
same pair. Each sub-discriminator returns its logits and the feature maps used by feature matching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from voiceconv.vocoder.hifigan import LRELU_SLOPE, get_padding


@dataclass
class DiscriminatorConfig:
    periods: tuple = (2, 3, 5, 7, 11)  # HiFi-GAN MPD: primes, so the periods overlap little
    # HiFi-GAN MPD channels per layer; the CPU configs shrink them (the discriminator dominates step time)
    period_channels: tuple = (32, 128, 512, 1024, 1024)
    # (n_fft, hop, win) per STFT discriminator: UnivNet/Vocos MRD resolutions
    resolutions: tuple = field(default_factory=lambda: ((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512)))
    resolution_channels: int = 32  # UnivNet/Vocos MRD channels

    def __post_init__(self) -> None:
        self.periods = tuple(int(p) for p in self.periods)
        self.period_channels = tuple(int(c) for c in self.period_channels)
        self.resolutions = tuple(tuple(int(v) for v in r) for r in self.resolutions)
        if any(len(r) != 3 for r in self.resolutions):
            raise ValueError("each resolution must be [n_fft, hop, win]")
        if len(self.period_channels) < 2:
            raise ValueError("period_channels needs at least two layers")


Output = tuple[torch.Tensor, list[torch.Tensor]]  # (logits (B, N), feature maps)


class PeriodDiscriminator(nn.Module):
    """Waveform ``(B, L)`` folded to ``(B, 1, L / p, p)``; 2-D convs along time only."""

    def __init__(self, period: int, channels: tuple, kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        padding = (get_padding(kernel_size), 0)
        layers, previous = [], 1
        for i, width in enumerate(channels):
            # The last layer keeps its resolution (stride 1), as in HiFi-GAN.
            step = stride if i < len(channels) - 1 else 1
            layers.append(weight_norm(nn.Conv2d(previous, width, (kernel_size, 1), (step, 1), padding=padding)))
            previous = width
        self.convs = nn.ModuleList(layers)
        self.conv_post = weight_norm(nn.Conv2d(previous, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> Output:
        batch, length = audio.shape
        if length % self.period:
            # Reflect-pad to a whole number of periods so the fold below is exact.
            pad = self.period - length % self.period
            audio = F.pad(audio.unsqueeze(1), (0, pad), mode="reflect").squeeze(1)  # (B, L + pad)
            length += pad
        x = audio.view(batch, 1, length // self.period, self.period)  # (B, 1, L / p, p)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features  # logits: (B, 1, L', p) -> (B, L' * p)


class ResolutionDiscriminator(nn.Module):
    """STFT magnitude ``(B, 1, frames, bins)`` of the waveform; convs stride along frequency."""

    def __init__(self, n_fft: int, hop: int, win: int, channels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, channels, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.conv_post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> Output:
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        # Magnitude with a small floor so the gradient at exact zeros stays finite.
        x = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)
        x = x.transpose(1, 2).unsqueeze(1)  # (B, bins, frames) -> (B, 1, frames, bins)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.conv_post(x)
        features.append(x)
        return x.flatten(1), features  # logits: (B, 1, frames, bins') -> (B, frames * bins')


class Discriminators(nn.Module):
    """All sub-discriminators; ``forward(audio (B, L))`` returns one :data:`Output` per sub-discriminator."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = config or DiscriminatorConfig()
        c = self.config
        self.period = nn.ModuleList(PeriodDiscriminator(p, c.period_channels) for p in c.periods)
        self.resolution = nn.ModuleList(
            ResolutionDiscriminator(n_fft, hop, win, c.resolution_channels) for n_fft, hop, win in c.resolutions
        )

    def forward(self, audio: torch.Tensor) -> list[Output]:
        return [d(audio) for d in self.period] + [d(audio) for d in self.resolution]
