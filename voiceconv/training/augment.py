"""Training-time augmentation of log-mel batches: random gain and vocal-tract-length perturbation.

- **Gain** makes the speaker encoder ignore recording level. Log-mels are ``log(max(mel, clamp))``,
  so a gain is applied in the linear domain: bins at the clamp floor (true value unknown, below the
  floor) stay at the floor, every other bin moves by ``log(gain)`` and is clamped again.
- **VTLP** (Jaitly & Hinton 2013) warps the frequency axis by a factor ``alpha``, like a longer or
  shorter vocal tract. The warp is applied to mel-bin indices, piecewise linear so that the top
  bin stays in place (no bins pushed off the end or invented past it). A warped voice is a
  different voice, so each warp *bucket* becomes a virtual speaker:
  ``speaker * n_warp_buckets + bucket``. Build the model with :func:`n_virtual_speakers` classes.

Only ``mel`` (and ``ref_mel``, the same way) and ``speaker`` are changed; ``audio`` (if present)
is left as is, so use this for the VC model, not for vocoder training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from voiceconv.errors import ConfigError


@dataclass
class AugmentConfig:
    gain_db: tuple[float, float] = (-6.0, 6.0)  # uniform gain range in dB (our choice: typical level spread)
    gain_probability: float = 0.5  # share of utterances that get a random gain
    vtlp_alpha: tuple[float, float] = (0.9, 1.1)  # warp factors; Jaitly & Hinton 2013 use 0.9-1.1
    vtlp_probability: float = 0.0  # share of utterances that are warped; 0 disables VTLP (and virtual speakers)
    n_warp_buckets: int = 5  # warp factors are binned into this many virtual speakers per real speaker
    vtlp_boundary: float = 0.8  # fraction of the mel axis warped linearly before the tail maps onto the top bin

    def __post_init__(self) -> None:
        lo, hi = self.vtlp_alpha
        if not 0.0 < lo <= 1.0 <= hi:
            raise ConfigError(f"augment.vtlp_alpha must satisfy 0 < low <= 1 <= high, got {self.vtlp_alpha}")
        if self.gain_db[0] > self.gain_db[1]:
            raise ConfigError(f"augment.gain_db must be (low, high), got {self.gain_db}")
        for name in ("gain_probability", "vtlp_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.n_warp_buckets < 1 or not 0.0 < self.vtlp_boundary < 1.0:
            raise ConfigError("augment.n_warp_buckets must be >= 1 and augment.vtlp_boundary in (0, 1)")

    @property
    def virtual_speakers(self) -> bool:
        return self.vtlp_probability > 0.0


def n_virtual_speakers(n_speakers: int, config: AugmentConfig) -> int:
    """Number of speaker classes the model sees after :func:`augment_batch`."""
    return n_speakers * config.n_warp_buckets if config.virtual_speakers else n_speakers


def warp_bucket(alpha: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """Equal-width bucket of each warp factor in ``vtlp_alpha``; unwarped utterances (alpha 1) share one bucket."""
    lo, hi = config.vtlp_alpha
    if hi == lo:
        return torch.zeros_like(alpha, dtype=torch.long)
    position = (alpha - lo) / (hi - lo) * config.n_warp_buckets
    return position.long().clamp(0, config.n_warp_buckets - 1)


def apply_gain(mel: torch.Tensor, gain_db: torch.Tensor, log_clamp: float) -> torch.Tensor:
    """``mel (B, n_mels, T)`` natural-log mel, ``gain_db (B,)`` -> the mel of the louder/quieter audio."""
    floor = math.log(log_clamp)
    shift = (gain_db * math.log(10.0) / 20.0).view(-1, 1, 1)  # dB of amplitude -> natural log; (B, 1, 1)
    at_floor = mel <= floor + 1e-6
    return torch.where(at_floor, mel, (mel + shift).clamp_min(floor))


def warp_mel(mel: torch.Tensor, alpha: torch.Tensor, boundary: float = 0.8) -> torch.Tensor:
    """Warp the mel-bin axis: output bin ``k`` reads input position ``k / alpha`` (linear interpolation).

    ``mel (B, n_mels, T)``, ``alpha (B,)``. Above ``boundary * (n_mels - 1) * min(alpha, 1)`` the
    map is a straight line to the top bin, as in VTLP's piecewise-linear warp, so all output bins
    read real input bins.
    """
    batch, n_mels, _ = mel.shape
    top = float(n_mels - 1)
    k = torch.arange(n_mels, device=mel.device, dtype=mel.dtype).unsqueeze(0)  # (1, n_mels)
    alpha = alpha.to(mel.dtype).unsqueeze(1)  # (B, 1)
    knee = boundary * top * torch.clamp(alpha, max=1.0)  # output bin where the linear part ends; (B, 1)
    knee_source = knee / alpha
    tail = knee_source + (k - knee) * (top - knee_source) / (top - knee)
    source = torch.where(k <= knee, k / alpha, tail).clamp(0.0, top)  # (B, n_mels) fractional input bin
    low = source.floor().long().clamp(max=n_mels - 2)
    frac = (source - low.to(mel.dtype)).unsqueeze(-1)  # (B, n_mels, 1)
    index = low.unsqueeze(-1).expand(-1, -1, mel.shape[-1])  # (B, n_mels, T) for gather along bins
    below = mel.gather(1, index)
    above = mel.gather(1, index + 1)
    return below + frac * (above - below)


def augment_batch(batch: dict, config: AugmentConfig, generator: torch.Generator, log_clamp: float = 1e-5) -> dict:
    """Augment ``{"mel": (B, n_mels, T), "speaker": (B,), ...}``; returns a new dict, the input is untouched.

    ``generator`` (a CPU ``torch.Generator``) makes the draws reproducible; ``log_clamp`` must be the
    mel config's ``log_clamp``. When VTLP is on, ``speaker`` becomes the virtual speaker id.
    """
    mel = batch["mel"]
    size = mel.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(size, generator=generator)).to(mel.device)

    def chosen(probability: float) -> torch.Tensor:
        return (torch.rand(size, generator=generator) < probability).to(mel.device)

    out = dict(batch)
    # A reference segment of the same speaker (``ref_mel``) gets the same gain and warp: it must
    # stay the same (virtual) speaker.
    keys = [key for key in ("mel", "ref_mel") if key in batch]
    no_gain = torch.zeros(size, device=mel.device)
    gain_db = torch.where(chosen(config.gain_probability), uniform(*config.gain_db), no_gain)
    for key in keys:
        out[key] = apply_gain(out[key], gain_db, log_clamp)

    if config.virtual_speakers:
        alpha = torch.where(chosen(config.vtlp_probability), uniform(*config.vtlp_alpha),
                            torch.ones(size, device=mel.device))
        for key in keys:
            out[key] = warp_mel(out[key], alpha, config.vtlp_boundary)
        if "speaker" in batch:
            speaker = batch["speaker"]
            out["speaker"] = speaker * config.n_warp_buckets + warp_bucket(alpha, config).to(speaker.device)
    return out
