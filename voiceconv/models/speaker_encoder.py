"""AdaIN-VC speaker encoder: conv bank, conv blocks (no normalisation), temporal average, dense blocks.

No instance norm here: the per-utterance channel statistics that the content encoder throws away
are exactly what the speaker vector should capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from voiceconv.errors import ConfigError
from voiceconv.models.layers import ConvBank, ConvBlock, activation, masked_mean


@dataclass
class SpeakerEncoderConfig:
    channels: int = 128  # AdaIN-VC c_h
    out_channels: int = 128  # AdaIN-VC c_out: speaker vector size D
    kernel_size: int = 5  # AdaIN-VC kernel_size
    bank_size: int = 8  # AdaIN-VC bank_size
    bank_scale: int = 1  # AdaIN-VC bank_scale
    bank_channels: int = 128  # AdaIN-VC c_bank
    subsample: tuple[int, ...] = (1, 2, 1, 2, 1, 2)  # AdaIN-VC subsample
    n_dense_blocks: int = 6  # AdaIN-VC n_dense_blocks
    activation: str = "relu"  # AdaIN-VC act
    dropout: float = 0.0  # AdaIN-VC dropout_rate

    def __post_init__(self) -> None:
        if not self.subsample or any(int(s) < 1 for s in self.subsample):
            raise ConfigError(f"speaker_encoder.subsample must be a non-empty list of ints >= 1, got {self.subsample}")


class DenseBlock(nn.Module):
    """Two Linear layers with a residual path (AdaIN-VC's dense blocks after pooling)."""

    def __init__(self, channels: int, act: str, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(channels, channels), activation(act), nn.Dropout(dropout),
            nn.Linear(channels, channels), activation(act), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class SpeakerEncoder(nn.Module):
    """``(B, n_mels, T)`` normalised log-mel (any ``T >= 1``) -> speaker vector ``(B, D)``.

    Every conv pads by replication and strided convs output ``ceil(T / stride)`` frames, so a
    single frame is enough; with a ``mask (B, T)`` the average runs over real frames only.
    """

    def __init__(self, n_mels: int, config: SpeakerEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.bank = ConvBank(n_mels, c.bank_channels, c.channels, c.bank_size, c.bank_scale, c.activation)
        self.blocks = nn.ModuleList(
            ConvBlock(c.channels, c.kernel_size, int(s), c.activation, c.dropout, norm=False) for s in c.subsample
        )
        self.dense = nn.Sequential(*(DenseBlock(c.channels, c.activation, c.dropout) for _ in range(c.n_dense_blocks)))
        self.out = nn.Linear(c.channels, c.out_channels)

    def forward(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mel (B, n_mels, T)``, ``mask (B, T)`` -> ``(B, D)``."""
        x = self.bank(mel)
        for block in self.blocks:
            x, mask = block(x, mask)
        return self.out(self.dense(masked_mean(x, mask)))
