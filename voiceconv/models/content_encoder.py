"""AdaIN-VC content encoder: conv bank, IN conv blocks with subsampling, Gaussian posterior per frame.

Instance norm without affine parameters after every conv removes each utterance's per-channel
mean and variance, which is where global speaker traits (timbre, level) live; what survives is
the frame-to-frame content (Chou et al., Interspeech 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from voiceconv.errors import ConfigError
from voiceconv.models.layers import ConvBank, ConvBlock, instance_norm


@dataclass
class ContentEncoderConfig:
    channels: int = 128  # AdaIN-VC c_h
    out_channels: int = 128  # AdaIN-VC c_out: content code size per frame
    kernel_size: int = 5  # AdaIN-VC kernel_size
    bank_size: int = 8  # AdaIN-VC bank_size: bank kernels up to 8 frames
    bank_scale: int = 1  # AdaIN-VC bank_scale: kernels 1, 2, ..., 8
    bank_channels: int = 128  # AdaIN-VC c_bank
    subsample: tuple[int, ...] = (1, 2, 1, 2, 1, 2)  # AdaIN-VC subsample: one block each, T -> ceil(T / 8)
    activation: str = "relu"  # AdaIN-VC act
    dropout: float = 0.0  # AdaIN-VC dropout_rate
    variational: bool = True  # AdaIN-VC: Gaussian posterior + KL; the VQ variants turn it off

    def __post_init__(self) -> None:
        if not self.subsample or any(int(s) < 1 for s in self.subsample):
            raise ConfigError(f"content_encoder.subsample must be a non-empty list of ints >= 1, got {self.subsample}")

    @property
    def total_stride(self) -> int:
        stride = 1
        for s in self.subsample:
            stride *= int(s)
        return stride


class ContentEncoder(nn.Module):
    """``(B, n_mels, T)`` normalised log-mel -> posterior mean and log-variance ``(B, C, ceil(T / 8))``."""

    def __init__(self, n_mels: int, config: ContentEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.bank = ConvBank(n_mels, c.bank_channels, c.channels, c.bank_size, c.bank_scale, c.activation)
        self.blocks = nn.ModuleList(
            ConvBlock(c.channels, c.kernel_size, int(s), c.activation, c.dropout, norm=True) for s in c.subsample
        )
        self.mean = nn.Conv1d(c.channels, c.out_channels, 1)
        # Without the VAE the log-variance head would receive no gradient at all, so it is not built.
        self.logvar = nn.Conv1d(c.channels, c.out_channels, 1) if c.variational else None

    def forward(
        self, mel: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``mel (B, n_mels, T)``, ``mask (B, T)`` -> ``mean (B, C, T')``, ``logvar (B, C, T')``, ``mask (B, T')``.

        ``T' = ceil(T / total_stride)``; ``logvar`` is None when the encoder is not variational.
        """
        x = instance_norm(self.bank(mel), mask)
        for block in self.blocks:
            x, mask = block(x, mask)
        logvar = self.logvar(x) if self.logvar is not None else None
        return self.mean(x), logvar, mask


LOGVAR_MIN, LOGVAR_MAX = -30.0, 10.0  # exp(0.5 * 10) = 148: any larger noise drowns the code anyway


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
    """Reparameterised sample ``mean + exp(logvar / 2) * eps``.

    We learn a full diagonal Gaussian posterior with the matching KL (the VAE written in the
    paper). The official AdaIN-VC code instead adds unit-variance noise and penalises only
    ``mean^2``; the learned variance lets the encoder decide how much noise each dimension
    tolerates, and the KL keeps it honest, so the two end up close in practice.
    """
    if logvar is None:
        return mean
    # The clamp only bounds the unpenalised log-variance of padded frames (the KL is masked there);
    # a real frame's KL pushes logvar toward 0, far inside it.
    return mean + torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)) * torch.randn_like(mean)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 * mean(mu^2 + exp(logvar) - 1 - logvar)`` over channels and real frames; ``mask (B, T')``."""
    mean, logvar = mean.float(), logvar.float()  # exp() of a bf16 log-variance is too coarse
    if mask is not None:
        # Padded frames are zeroed *before* exp(): their unconstrained logvar may overflow it to inf,
        # and inf * 0 (in the value or in the gradient) is NaN.
        real = mask.unsqueeze(1) > 0  # (B, 1, T')
        mean, logvar = torch.where(real, mean, 0.0), torch.where(real, logvar, 0.0)
    kl = 0.5 * (mean.pow(2) + torch.exp(logvar) - 1.0 - logvar)  # (B, C, T')
    if mask is None:
        return kl.mean()
    weight = mask.unsqueeze(1).to(kl.dtype)  # (B, 1, T')
    return (kl * weight).sum() / (weight.sum() * kl.shape[1]).clamp_min(1.0)
