"""Voice perturbation of the content encoder's input only: the decoder must take the voice from the speaker vector.

An AdaIN-VC auto-encoder rebuilds each utterance from its own content code, so nothing stops the
decoder from reading part of the voice (formant positions, the spacing of harmonics) off the
content code as well as off the speaker vector. At conversion time that part then comes from the
*source* speaker. ``benchmarks/similarity_ceiling.py`` measured it on held-out voices: the judge
scores a conversion from another speaker's content 0.13 below one from the target's own content.

Information perturbation (NANSY, Choi et al. 2021; SpeechSplit's random resampling, Qian et al.
2020) removes the incentive: the content encoder reads the utterance with its frequency axis warped
by a random factor ``alpha`` (formants and harmonics move together, as with a longer or shorter
vocal tract, :func:`voiceconv.training.augment.warp_mel`), while the speaker encoder reads the
unwarped utterance and the reconstruction target stays the clean, unwarped mel. Where the voice sits
on the frequency axis of the content input is then noise, so the decoder learns to place it from
the speaker vector. What is said survives a warp (it is VTLP, an ASR augmentation).

Unlike :mod:`voiceconv.training.augment`'s VTLP, which makes a *new* voice of the whole example, this
changes only one encoder's input; the speaker labels stay as they are. At conversion time nothing
is warped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from voiceconv.errors import ConfigError
from voiceconv.training.augment import warp_mel


@dataclass
class ContentWarpConfig:
    # Warp factors, drawn log-uniformly (a warp up and its inverse down are equally likely).
    # 0.87-1.15 is about +-2.4 semitones of formant and F0 shift: the spread between two adult
    # speakers of one sex, well inside what the content of speech survives.
    alpha: tuple[float, float] = (0.87, 1.15)
    probability: float = 0.8  # share of utterances whose content input is warped (the rest stay as they are)
    boundary: float = 0.8  # fraction of the mel axis warped linearly before the tail maps onto the top bin

    def __post_init__(self) -> None:
        low, high = (float(a) for a in self.alpha)
        if not 0.0 < low <= high:
            raise ConfigError(f"content_warp.alpha must be (low, high) with 0 < low <= high, got {self.alpha}")
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"content_warp.probability must be in [0, 1], got {self.probability}")
        if not 0.0 < self.boundary < 1.0:
            raise ConfigError(f"content_warp.boundary must be in (0, 1), got {self.boundary}")
        self.alpha = (low, high)


def draw_alpha(size: int, config: ContentWarpConfig, generator: torch.Generator) -> torch.Tensor:
    """``(size,)`` warp factors: log-uniform in ``config.alpha`` for a ``probability`` share, else 1."""
    low, high = (math.log(a) for a in config.alpha)
    log_alpha = low + (high - low) * torch.rand(size, generator=generator)
    warped = torch.rand(size, generator=generator) < config.probability
    return torch.where(warped, log_alpha.exp(), torch.ones(size))


def warp_content(mel: torch.Tensor, config: ContentWarpConfig, generator: torch.Generator) -> torch.Tensor:
    """``mel (B, n_mels, T)`` log-mel -> ``(B, n_mels, T)`` with each utterance's frequency axis warped.

    The draws come from ``generator`` (CPU), so a training step stays a function of (seed, step, rank).
    Padding frames sit at the log floor in every bin, and a warp reads between bins, so they stay there.
    """
    alpha = draw_alpha(mel.shape[0], config, generator).to(mel.device)
    return warp_mel(mel.float(), alpha, config.boundary)
