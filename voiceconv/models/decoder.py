"""AdaIN-VC decoder: conv blocks that upsample time (pixel shuffle) with AdaIN conditioning on the speaker.

Each conv is followed by instance norm (no affine) and then a per-channel scale and bias computed
from the speaker vector: the content code supplies *what* is said, the speaker vector re-imposes
the channel statistics that the content encoder's IN removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from voiceconv.errors import ConfigError
from voiceconv.models.layers import AdaIN, SameConv1d, activation, pixel_shuffle_1d, upsample_mask


@dataclass
class DecoderConfig:
    channels: int = 128  # AdaIN-VC c_h
    kernel_size: int = 5  # AdaIN-VC kernel_size
    upsample: tuple[int, ...] = (2, 1, 2, 1, 2, 1)  # AdaIN-VC upsample: mirror of the encoder's subsample
    activation: str = "relu"  # AdaIN-VC act
    dropout: float = 0.0  # AdaIN-VC dropout_rate

    def __post_init__(self) -> None:
        if not self.upsample or any(int(u) < 1 for u in self.upsample):
            raise ConfigError(f"decoder.upsample must be a non-empty list of ints >= 1, got {self.upsample}")

    @property
    def total_upsample(self) -> int:
        factor = 1
        for u in self.upsample:
            factor *= int(u)
        return factor


class DecoderBlock(nn.Module):
    """conv -> AdaIN -> act, conv (to ``C * up`` channels) -> pixel shuffle -> AdaIN -> act, plus residual."""

    def __init__(self, channels: int, cond_channels: int, kernel_size: int, up: int, act: str, dropout: float):
        super().__init__()
        self.up = up
        self.conv1 = SameConv1d(channels, channels, kernel_size)
        self.adain1 = AdaIN(channels, cond_channels)
        self.conv2 = SameConv1d(channels, channels * up, kernel_size)
        self.adain2 = AdaIN(channels, cond_channels)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None):
        """``x (B, C, T)``, ``cond (B, D)``, ``mask (B, T)`` -> ``(B, C, T * up)``, ``(B, T * up)``."""
        y = self.dropout(self.act(self.adain1(self.conv1(x), cond, mask)))
        y = self.conv2(y)
        if self.up > 1:
            y = pixel_shuffle_1d(y, self.up)  # (B, C, T * up)
            x = F.interpolate(x, scale_factor=self.up, mode="nearest")  # residual at the new rate
            mask = upsample_mask(mask, self.up)
        y = self.dropout(self.act(self.adain2(y, cond, mask)))
        return x + y, mask


class Decoder(nn.Module):
    """``content (B, C, T')``, ``speaker (B, D)`` -> normalised log-mel ``(B, n_mels, length)``."""

    def __init__(self, in_channels: int, cond_channels: int, n_mels: int, config: DecoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.inp = nn.Conv1d(in_channels, c.channels, 1)
        self.blocks = nn.ModuleList(
            DecoderBlock(c.channels, cond_channels, c.kernel_size, int(u), c.activation, c.dropout) for u in c.upsample
        )
        # No post-net: AdaIN-VC has none, and the L1 loss on mels is what the paper trains with.
        self.out = nn.Conv1d(c.channels, n_mels, 1)

    def forward(self, content: torch.Tensor, speaker: torch.Tensor, length: int,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` is ``(B, T')`` at the content rate. Output has exactly ``length`` frames."""
        x = self.inp(content)
        for block in self.blocks:
            x, mask = block(x, speaker, mask)
        x = self.out(x)  # (B, n_mels, T' * total_upsample)
        if x.shape[-1] >= length:
            return x[..., :length]  # the encoder rounded T up to a multiple of the stride
        # Only reached when a caller asks for more frames than the code covers: repeat the last frame.
        return F.pad(x, (0, length - x.shape[-1]), mode="replicate")
