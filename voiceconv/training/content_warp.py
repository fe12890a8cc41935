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

One warp moves formants and harmonics together, so the content input still tells the decoder how
the speaker's pitch sits relative to their formants. With ``pitch_alpha`` set, the two move apart
(the source-filter split of NANSY's formant and pitch perturbations, done on the log-mel itself):
the spectral envelope (the mel's first ``envelope_coefficients`` DCT coefficients along the
frequency axis, the vocal tract) is warped by ``alpha`` and the fine structure left over (the
harmonic comb, the pitch) by an independent factor drawn from ``pitch_alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from voiceconv.errors import ConfigError
from voiceconv.features import smooth_projection
from voiceconv.training.augment import warp_mel


@dataclass
class ContentWarpConfig:
    # Warp factors, drawn log-uniformly (a warp up and its inverse down are equally likely).
    # 0.87-1.15 is about +-2.4 semitones of formant (and, without pitch_alpha, F0) shift: the spread
    # between two adult speakers of one sex, well inside what the content of speech survives.
    alpha: tuple[float, float] = (0.87, 1.15)
    probability: float = 0.8  # share of utterances whose content input is warped (the rest stay as they are)
    boundary: float = 0.8  # fraction of the mel axis warped linearly before the tail maps onto the top bin
    # Warp factors of the fine structure (harmonics), drawn apart from ``alpha``; None warps the whole
    # mel by ``alpha``. Speakers' F0 spreads wider than their formants (an octave between a low male
    # and a high female voice), so this range may be wider than ``alpha``'s.
    pitch_alpha: tuple[float, float] | None = None
    # DCT coefficients (of n_mels) kept as the envelope. At 80 bins up to 8 kHz a bin is about 37 Hz
    # below 1 kHz, so harmonics of a 100-250 Hz voice repeat every 2.7-6.7 bins there (DCT index
    # 24-60); 16 keeps formants and tilt (periods of 10 bins and more) and leaves the comb to the fine
    # structure.
    envelope_coefficients: int = 16

    def __post_init__(self) -> None:
        self.alpha = _bounds("alpha", self.alpha)
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"content_warp.probability must be in [0, 1], got {self.probability}")
        if not 0.0 < self.boundary < 1.0:
            raise ConfigError(f"content_warp.boundary must be in (0, 1), got {self.boundary}")
        if self.pitch_alpha is not None:
            self.pitch_alpha = _bounds("pitch_alpha", self.pitch_alpha)
        if self.envelope_coefficients < 1:
            raise ConfigError(f"content_warp.envelope_coefficients must be >= 1, got {self.envelope_coefficients}")


def _bounds(name: str, value) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` float pair with ``0 < low <= high``, or a ConfigError naming ``name``."""
    low, high = (float(a) for a in value)
    if not 0.0 < low <= high:
        raise ConfigError(f"content_warp.{name} must be (low, high) with 0 < low <= high, got {value}")
    return low, high


def _log_uniform(size: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """``(size,)`` factors log-uniform in ``bounds = (low, high)``."""
    low, high = (math.log(a) for a in bounds)
    return (low + (high - low) * torch.rand(size, generator=generator)).exp()


def draw_alpha(size: int, config: ContentWarpConfig, generator: torch.Generator) -> torch.Tensor:
    """``(size,)`` warp factors: log-uniform in ``config.alpha`` for a ``probability`` share, else 1."""
    return _draw(size, config, generator)[0]


def _draw(size: int, config: ContentWarpConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha, pitch_alpha)``, each ``(size,)``; the utterances left unwarped get 1 in both.
    ``pitch_alpha`` is drawn last, so configs without it draw exactly as before it existed."""
    alpha = _log_uniform(size, config.alpha, generator)
    warped = torch.rand(size, generator=generator) < config.probability
    pitch_alpha = alpha if config.pitch_alpha is None else _log_uniform(size, config.pitch_alpha, generator)
    ones = torch.ones(size)
    return torch.where(warped, alpha, ones), torch.where(warped, pitch_alpha, ones)


def split_envelope(mel: torch.Tensor, coefficients: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``mel (B, n_mels, T)`` float32 -> ``(envelope, fine)``, both ``(B, n_mels, T)``, summing to ``mel``.

    The envelope is the projection onto the first ``coefficients`` orthonormal DCT-II basis vectors
    along the mel axis (cepstral liftering), so a frame that is flat across bins (padding at the
    log floor) is all envelope and its fine structure is zero. Formant peaks narrower than about
    ``n_mels / coefficients`` bins fall partly into the fine structure.
    """
    n_mels = mel.shape[1]
    if not 1 <= coefficients < n_mels:
        raise ConfigError(f"content_warp.envelope_coefficients must be in [1, {n_mels}) for {n_mels} mel bins, "
                          f"got {coefficients}")
    projection = smooth_projection(n_mels, coefficients).to(device=mel.device)
    # float32 even under autocast: in bf16 the envelope would be off by about 0.05 nats.
    with torch.autocast(mel.device.type, enabled=False):
        envelope = torch.einsum("jk,bkt->bjt", projection, mel.float())
    return envelope, mel.float() - envelope


def warp_content(mel: torch.Tensor, config: ContentWarpConfig, generator: torch.Generator,
                 log_floor: float | None = None) -> torch.Tensor:
    """``mel (B, n_mels, T)`` log-mel -> ``(B, n_mels, T)`` float32 with each utterance's frequency axis warped.

    The draws come from ``generator`` (CPU), so a training step stays a function of (seed, step, rank).
    One warp of the whole mel reads between input bins, so its values stay within the input's range
    and padding frames at the log floor stay there. With ``pitch_alpha``, envelope and fine structure
    are warped by different factors and can overshoot where the spectrum has a sharp edge (up to about
    a nat on real mels); ``log_floor`` (``log(mel_config.log_clamp)``) clamps the result there, as no
    real mel goes below it.
    """
    alpha, pitch_alpha = (factor.to(mel.device) for factor in _draw(mel.shape[0], config, generator))
    if config.pitch_alpha is None:
        return warp_mel(mel.float(), alpha, config.boundary)
    envelope, fine = split_envelope(mel, config.envelope_coefficients)
    warped = warp_mel(envelope, alpha, config.boundary) + warp_mel(fine, pitch_alpha, config.boundary)
    return warped if log_floor is None else warped.clamp(min=log_floor)
