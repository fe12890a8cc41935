"""Vector quantiser for the content code (VQVC / VQMIVC style), with an EMA codebook.

The codebook is not trained by gradient descent: it is a running (EMA) average of the encoder
outputs assigned to each code (van den Oord et al. 2017, appendix; Razavi et al. 2019), so it lives
in buffers and only moves in training mode. The encoder gets:

- the straight-through gradient of the reconstruction loss (``z + (z_q - z).detach()``);
- the commitment loss ``mean((z - sg(z_q))^2)``, returned as ``loss/vq_commit`` and weighted by
  the train config's ``lambdas`` (0.25 in VQ-VAE and VQMIVC).

Codes that nobody uses are re-initialised from current encoder outputs, so the codebook does not
collapse to a handful of entries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from voiceconv.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class QuantizerConfig:
    codebook_size: int = 512  # VQMIVC n_embeddings
    code_dim: int = 64  # VQMIVC z_dim; projected from/to the content encoder's out_channels when they differ
    decay: float = 0.999  # VQMIVC / VQ-VAE-2 EMA decay
    epsilon: float = 1e-5  # Laplace smoothing of the EMA counts (VQ-VAE-2 / Sonnet default)
    dead_code_steps: int = 200  # re-initialise a code unused for this many training steps (our choice)
    dead_code_threshold: float = 1e-3  # ... or whose EMA count fell below this (Jukebox uses 1.0 with huge batches)

    def __post_init__(self) -> None:
        if self.codebook_size < 2 or self.code_dim < 1:
            raise ConfigError("quantizer.codebook_size must be >= 2 and quantizer.code_dim >= 1")
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"quantizer.decay must be in (0, 1), got {self.decay}")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """``(B, C, T)`` content code -> quantised ``(B, C, T)``, commitment loss, metrics."""

    def __init__(self, in_channels: int, config: QuantizerConfig):
        super().__init__()
        self.config = config
        k, d = config.codebook_size, config.code_dim
        # VQMIVC quantises a 64-d code; a 1x1 conv maps the 128-d content code there and back.
        same = in_channels == d
        self.project_in = nn.Identity() if same else nn.Conv1d(in_channels, d, 1)
        self.project_out = nn.Identity() if same else nn.Conv1d(d, in_channels, 1)
        self.register_buffer("codebook", torch.randn(k, d))
        self.register_buffer("ema_count", torch.ones(k))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.long))
        # Set on the first training batch, when the codebook is filled with real encoder outputs
        # (a data-dependent start instead of random vectors far from the data).
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))

    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code index for each row of ``z (N, D)`` -> ``(N,)``."""
        z = z.float()
        codebook = self.codebook.float()
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, without materialising (N, K, D).
        distances = z.pow(2).sum(1, keepdim=True) - 2.0 * z @ codebook.t() + codebook.pow(2).sum(1)  # (N, K)
        return distances.argmin(dim=1)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: ``(B, C, T)`` -> nearest codes mapped back to ``(B, C, T)``; never touches the codebook."""
        z = self.project_in(x)  # (B, D, T)
        batch, dim, frames = z.shape
        flat = z.transpose(1, 2).reshape(batch * frames, dim)  # (B*T, D)
        quantized = self.codebook[self.lookup(flat)].to(z.dtype)  # (B*T, D)
        return self.project_out(quantized.view(batch, frames, dim).transpose(1, 2))  # (B, C, T)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """``x (B, C, T)``, ``mask (B, T)`` -> ``(quantised (B, C, T), commit loss (), metrics dict)``."""
        z = self.project_in(x)  # (B, D, T)
        batch, dim, frames = z.shape
        flat = z.transpose(1, 2).reshape(batch * frames, dim)  # (B*T, D): one row per frame
        real = flat if mask is None else flat[mask.reshape(-1) > 0]  # (N, D) frames that are not padding

        if self.training and real.shape[0] > 0:
            if not bool(self.initialized):
                self._initialize(real.detach())
        indices = self.lookup(flat.detach())  # (B*T,)
        quantized = self.codebook[indices].to(z.dtype).view(batch, frames, dim).transpose(1, 2)  # (B, D, T)

        error = (z - quantized.detach()).pow(2)  # (B, D, T)
        if mask is None:
            commit = error.mean()
        else:
            weight = mask.unsqueeze(1).to(error.dtype)  # (B, 1, T)
            commit = (error * weight).sum() / (weight.sum() * dim).clamp_min(1.0)

        real_indices = indices if mask is None else indices[mask.reshape(-1) > 0]
        counts = torch.bincount(real_indices, minlength=self.config.codebook_size).float()  # (K,)
        reinitialized = torch.zeros((), device=z.device)
        if self.training and real.shape[0] > 0:
            reinitialized = self._ema_update(real.detach().float(), real_indices, counts)

        probs = counts / counts.sum().clamp_min(1.0)
        metrics = {
            # exp(entropy) of code usage in this batch: how many codes are effectively in use.
            "metric/vq_perplexity": torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum()).detach(),
            "metric/vq_live_codes": (counts > 0).sum().float().detach(),
            "metric/vq_reinit_codes": reinitialized.detach(),
        }
        # Straight-through: forward uses the code, backward passes the gradient to z unchanged.
        straight = z + (quantized - z).detach()
        return self.project_out(straight), commit, metrics

    @torch.no_grad()
    def _initialize(self, real: torch.Tensor) -> None:
        """Fill the codebook with random encoder outputs ``real (N, D)`` (with replacement if N < K)."""
        samples = self._sample(real, self.config.codebook_size)
        self.codebook.copy_(samples)
        self.ema_sum.copy_(samples)
        self.ema_count.fill_(1.0)
        self.unused_steps.zero_()
        self.initialized.fill_(1)
        self._sync_from_rank0()

    @staticmethod
    def _sample(real: torch.Tensor, n: int) -> torch.Tensor:
        if real.shape[0] >= n:
            return real[torch.randperm(real.shape[0], device=real.device)[:n]].float()
        picks = real[torch.randint(real.shape[0], (n,), device=real.device)].float()
        # Repeated picks get a little noise so that they do not stay identical codes.
        return picks + 0.01 * picks.std().clamp_min(1e-3) * torch.randn_like(picks)

    @torch.no_grad()
    def _ema_update(self, real: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Move each code toward the mean of the frames assigned to it; re-initialise dead codes."""
        c = self.config
        counts = counts.clone()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, real)  # (K, D)
        if _distributed():
            # Every rank sees a different batch; summing keeps one codebook across ranks.
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_count.mul_(c.decay).add_(counts, alpha=1.0 - c.decay)
        self.ema_sum.mul_(c.decay).add_(sums, alpha=1.0 - c.decay)
        total = self.ema_count.sum()
        # Laplace smoothing keeps a code with a tiny count from dividing by ~0.
        smoothed = (self.ema_count + c.epsilon) / (total + c.codebook_size * c.epsilon) * total
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))

        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.unused_steps >= c.dead_code_steps) | (self.ema_count < c.dead_code_threshold)
        n_dead = int(dead.sum())
        if n_dead:
            samples = self._sample(real, n_dead)
            self.codebook[dead] = samples
            self.ema_sum[dead] = samples
            self.ema_count[dead] = 1.0
            self.unused_steps[dead] = 0
            self._sync_from_rank0()
            log.debug("re-initialised %d dead VQ codes", n_dead)
        return torch.tensor(float(n_dead), device=real.device)

    def _sync_from_rank0(self) -> None:
        """Random re-initialisation differs per rank; rank 0's choice wins."""
        if _distributed():
            for buffer in (self.codebook, self.ema_sum, self.ema_count, self.unused_steps):
                dist.broadcast(buffer, src=0)
