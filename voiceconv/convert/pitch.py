"""Pitch control for AdaIN-VC, which has no F0 model of its own.

The content code keeps much of the source's intonation *and* its pitch range, so a low male voice
converted to a high female target comes out low. ``pitch="auto"`` therefore moves the source's F0
towards the target's before conversion, by the difference of their log-F0 means (a global shift in
semitones, so the source's own intonation is kept).

**Pitch tracking.** WORLD's DIO + StoneMask through ``pyworld`` (``pip install pyworld-prebuilt``)
when it imports, otherwise ``librosa.pyin``. On this 2-core CPU, for 10 s of 22.05 kHz speech:
DIO + StoneMask 0.13 s, pYIN (at 16 kHz) 5.2 s: 40x slower, so pYIN is only the fallback. DIO runs
on the audio resampled to 8 kHz (F0 <= 800 Hz needs no more): on 60 s of speech 0.20 s instead of
0.6-1.0 s at 22.05 kHz, which was 40 % of a whole ``pitch="auto"`` conversion, and the mean log-F0
moved by 0.004 (0.07 semitones).

**The shift** is applied to the source's STFT magnitude, right before the mel filterbank, and keeps
the spectral envelope: the log-magnitude is split into a cepstrally smoothed envelope (formants)
and the fine structure (harmonics), and only the fine structure is stretched along frequency by
``2 ** (semitones / 12)``. Why this and not an audio-domain shifter:

- the model only ever sees the log-mel of the source, i.e. the STFT magnitude; a magnitude-domain
  shift gives it what a formant-preserving shifter would, and needs no phase;
- it is frame-local, so chunked and streaming conversion stay exact (an audio shifter's edges and
  WORLD's pulse positions would differ between overlapping windows);
- it costs one extra FFT pair per frame: about 0.004 s per 10 s of audio, against (same 10 s)
  WORLD analysis + resynthesis 1.15 s (D4C alone 0.69 s: more than the whole conversion budget)
  and ``librosa.effects.pitch_shift`` 0.07 s, which also moves the formants (the "chipmunk"
  effect) and so changes the very spectral envelope the speaker encoder looks at.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

F0_FLOOR_HZ = 50.0  # below the speaking F0 of the deepest adult voices
F0_CEIL_HZ = 800.0  # above children's speech; DIO/pYIN search range
FRAME_PERIOD_MS = 10.0  # F0 frame period: plenty for mean/std statistics
DIO_RATE = 8000  # DIO's analysis rate: Nyquist 4 kHz, five times F0_CEIL_HZ (see the module docstring)
MAX_AUTO_SEMITONES = 12.0  # "auto" never shifts more than an octave: beyond that the shift itself sounds artificial
MIN_VOICED_SECONDS = 0.25  # less voiced speech than this gives no trustworthy log-F0 mean
LIFTER_F0_HZ = 600.0  # envelope lifter cut-off: the cepstrum below the pitch period of a 600 Hz voice


def _pyworld():
    try:
        import pyworld

        return pyworld
    except ImportError:
        return None


def f0_backend() -> str:
    """``"pyworld"`` (DIO + StoneMask) when importable, else ``"pyin"``."""
    return "pyworld" if _pyworld() is not None else "pyin"


def track_f0(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """F0 in Hz of ``audio (T,)`` every 10 ms, 0 where unvoiced. Returns ``(frames,)`` float64."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if audio.size < sample_rate * FRAME_PERIOD_MS / 1000 * 2:
        return np.zeros(0)
    pyworld = _pyworld()
    import soxr

    if pyworld is not None:
        if sample_rate > DIO_RATE:
            audio = soxr.resample(audio, sample_rate, DIO_RATE)
            sample_rate = DIO_RATE
        f0, times = pyworld.dio(audio, sample_rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ,
                                frame_period=FRAME_PERIOD_MS)
        return pyworld.stonemask(audio, f0, times, sample_rate)
    import librosa

    # pYIN at 16 kHz: F0 <= 800 Hz needs nothing higher, and it is the slow path anyway.
    rate = 16000
    resampled = soxr.resample(audio, sample_rate, rate) if sample_rate != rate else audio
    hop = int(rate * FRAME_PERIOD_MS / 1000)
    f0, voiced, _ = librosa.pyin(resampled.astype(np.float32), fmin=F0_FLOOR_HZ, fmax=F0_CEIL_HZ, sr=rate,
                                 frame_length=1024, hop_length=hop)
    return np.where(voiced & np.isfinite(f0), f0, 0.0)


@dataclass
class F0Stats:
    """Running statistics of log-F0 (natural log of Hz) over voiced frames; mergeable across chunks."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def update_f0(self, f0: np.ndarray) -> F0Stats:
        voiced = np.log(f0[f0 > 0])
        self.count += int(voiced.size)
        self.total += float(voiced.sum())
        self.total_sq += float((voiced**2).sum())
        return self

    def update(self, audio: np.ndarray, sample_rate: int) -> F0Stats:
        return self.update_f0(track_f0(audio, sample_rate))

    @property
    def voiced_seconds(self) -> float:
        return self.count * FRAME_PERIOD_MS / 1000

    @property
    def reliable(self) -> bool:
        return self.voiced_seconds >= MIN_VOICED_SECONDS

    @property
    def mean(self) -> float:
        """Mean log-F0, NaN unless :attr:`reliable`."""
        return self.total / self.count if self.reliable else math.nan

    @property
    def std(self) -> float:
        if not self.reliable:
            return math.nan
        return math.sqrt(max(self.total_sq / self.count - (self.total / self.count) ** 2, 0.0))


def auto_semitones(source_log_f0_mean: float, target_log_f0_mean: float,
                   limit: float = MAX_AUTO_SEMITONES) -> float:
    """Semitones that move the source's log-F0 mean onto the target's, clipped to ``+-limit``.

    0 (with a log message) when either mean is unknown (NaN): too little voiced speech to judge.
    """
    if not (math.isfinite(source_log_f0_mean) and math.isfinite(target_log_f0_mean)):
        log.info("pitch auto: not enough voiced speech in the %s to estimate its pitch; no shift",
                 "source" if not math.isfinite(source_log_f0_mean) else "target references")
        return 0.0
    semitones = 12.0 * (target_log_f0_mean - source_log_f0_mean) / math.log(2.0)
    if abs(semitones) > limit:
        log.info("pitch auto: %.1f semitones clipped to %+.0f", semitones, math.copysign(limit, semitones))
    return float(np.clip(semitones, -limit, limit))


def parse_pitch(value) -> str | float | None:
    """``"auto"`` -> ``"auto"``; ``None``/``"off"``/``"none"``/``0`` -> None; a number (or numeric string) -> float."""
    from voiceconv.errors import VoiceconvError

    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in ("off", "none", ""):
            return None
        try:
            value = float(text)
        except ValueError:
            raise VoiceconvError(f"pitch must be 'auto', 'off' or a number of semitones (e.g. -3, +4.5), "
                                 f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise VoiceconvError(f"pitch must be 'auto', None or a number of semitones, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or abs(value) > 24:
        raise VoiceconvError(f"pitch shift of {value} semitones is out of range; use -24..24")
    return value if value != 0 else None


def shift_magnitude(magnitude: torch.Tensor, semitones: float, sample_rate: int) -> torch.Tensor:
    """Shift the pitch of an STFT magnitude by ``semitones``, keeping its spectral envelope.

    ``magnitude``: ``(..., n_fft // 2 + 1, frames)``, linear, > 0. Returns the same shape. Each frame
    is done independently, so any chunking of the frames gives the same result.
    """
    if not semitones:
        return magnitude
    ratio = 2.0 ** (semitones / 12.0)
    n_bins = magnitude.shape[-2]
    n_fft = 2 * (n_bins - 1)
    log_magnitude = torch.log(magnitude.clamp_min(1e-9))
    # Real cepstrum along frequency; low quefrencies hold the envelope, the pitch period's peak sits higher.
    cepstrum = torch.fft.irfft(log_magnitude, n=n_fft, dim=-2)  # (..., n_fft, frames)
    lifter = max(2, min(int(sample_rate / LIFTER_F0_HZ), n_fft // 2))
    keep = torch.zeros(n_fft, 1, dtype=cepstrum.dtype, device=cepstrum.device)  # (n_fft, 1): broadcast on frames
    keep[:lifter] = 1.0
    keep[n_fft - lifter + 1 :] = 1.0  # the cepstrum of a real spectrum is symmetric
    envelope = torch.fft.rfft(cepstrum * keep, dim=-2).real  # (..., n_bins, frames)
    fine = log_magnitude - envelope
    # new_fine(f) = fine(f / ratio): harmonics at k*F0 move to k*ratio*F0, the envelope stays put.
    position = torch.arange(n_bins, dtype=torch.float64, device=magnitude.device) / ratio
    low = position.floor().long().clamp(max=n_bins - 1)
    high = (low + 1).clamp(max=n_bins - 1)
    frac = (position - low).to(fine.dtype).unsqueeze(-1)  # (n_bins, 1)
    shifted = fine[..., low, :] * (1 - frac) + fine[..., high, :] * frac
    # Above the old top bin (downward shifts) there is no fine structure to move: leave the envelope.
    outside = (position > n_bins - 1).unsqueeze(-1)  # (n_bins, 1)
    shifted = shifted.masked_fill(outside, 0.0)
    return torch.exp(envelope + shifted)
