"""Recording-channel corruption of log-mel batches, for de-noising and channel-robust training.

Users record on other microphones, in rooms, over phones and next to fans. Each corruption below
is applied to the *power* mel (``exp`` of the log-mel), where a microphone or room is a gain per
band, reverberation is a per-band convolution over frames, and noise adds; the result is logged
and clamped at the silence floor again. Working on mels (not waveforms) keeps a training step
cheap on a CPU; the evaluation conditions are made on waveforms instead (real band-limiting,
filters, rooms and noise recordings), so the model is tested on corruptions it did not see.

- **EQ and tilt**: a smooth random curve over the mel axis (a few random cosines) plus a linear
  tilt, like a different microphone or a speaker's proximity effect.
- **Band limit**: bands above a cut-off (telephone 3.4 kHz, 4 kHz for 8 kHz audio, and so on) are
  rolled off steeply; the telephone band also loses everything below 300 Hz.
- **Reverberation**: each band convolved with an exponentially decaying tail whose RT60 is drawn
  per utterance and shortened toward high bands (air absorbs them faster); a random
  direct-to-reverberant ratio.
- **Noise**: stationary coloured noise of a random smooth spectrum, or babble made from other
  utterances of the batch, at a random SNR against the utterance's own mean power; each frame's
  noise power fluctuates as real noise periodograms do.

:func:`corrupt` draws everything from a ``torch.Generator`` so a training step stays a pure
function of (seed, step, rank). The trainer feeds the corrupted mels to the content and speaker
encoders and keeps the clean mel as the reconstruction target (a de-noising auto-encoder).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from voiceconv.errors import ConfigError
from voiceconv.features import MelConfig


@dataclass
class ChannelConfig:
    probability: float = 0.7  # share of inputs that get any corruption at all (the rest stay clean)
    eq_probability: float = 0.6  # of the corrupted ones: random EQ curve and tilt
    eq_db: float = 6.0  # EQ curve peak amplitude, dB (uniform in +-)
    tilt_db: float = 8.0  # spectral tilt from the lowest to the highest band, dB (uniform in +-)
    band_limit_probability: float = 0.3  # roll off the bands above a cut-off
    band_limit_hz: tuple[float, ...] = (3400.0, 4000.0, 5500.0, 7000.0)  # cut-offs (3400: telephone band)
    reverb_probability: float = 0.3  # per-band exponential reverberation tail
    rt60_s: tuple[float, float] = (0.15, 0.9)  # reverberation time at low frequencies, seconds
    drr_db: tuple[float, float] = (-3.0, 12.0)  # direct-to-reverberant energy ratio, dB
    noise_probability: float = 0.5  # additive coloured or babble noise
    snr_db: tuple[float, float] = (0.0, 25.0)  # signal-to-noise ratio against the utterance's mean power, dB
    babble_share: float = 0.3  # share of the noisy inputs whose noise is babble (other batch utterances)

    def __post_init__(self) -> None:
        for name in ("probability", "eq_probability", "band_limit_probability", "reverb_probability",
                     "noise_probability", "babble_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"channel.{name} must be in [0, 1], got {value}")
        for name in ("rt60_s", "drr_db", "snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"channel.{name} must be (low, high), got {getattr(self, name)}")
        if self.rt60_s[0] <= 0.0:
            raise ConfigError(f"channel.rt60_s must be positive, got {self.rt60_s}")
        if not self.band_limit_hz or min(self.band_limit_hz) <= 300.0:
            raise ConfigError(f"channel.band_limit_hz needs cut-offs above 300 Hz, got {self.band_limit_hz}")
        self.band_limit_hz = tuple(float(h) for h in self.band_limit_hz)


def mel_band_centres(mel_config: MelConfig) -> torch.Tensor:
    """Centre frequency in Hz of each mel band ``(n_mels,)`` (Slaney scale, as the front end)."""
    return _band_centres(mel_config.n_mels, mel_config.fmin, mel_config.fmax or mel_config.sample_rate / 2).clone()


@functools.lru_cache(maxsize=8)
def _band_centres(n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    # Cached: corrupt() runs every training step and the axis never changes within a run.
    import librosa

    return torch.as_tensor(librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1], dtype=torch.float32)


class _Draws:
    """Per-utterance random draws from one generator: ``uniform``, ``chosen`` and ``normal`` of shape (B, ...)."""

    def __init__(self, size: int, generator: torch.Generator, device: torch.device):
        self.size, self.generator, self.device = size, generator, device

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        draw = torch.rand(self.size, *shape, generator=self.generator)
        return (low + (high - low) * draw).to(self.device)

    def chosen(self, probability: float) -> torch.Tensor:
        return (torch.rand(self.size, generator=self.generator) < probability).to(self.device)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.size, *shape, generator=self.generator).to(self.device)

    def integers(self, high: int) -> torch.Tensor:
        return torch.randint(high, (self.size,), generator=self.generator).to(self.device)


def _eq_gain_db(draws: _Draws, n_mels: int, config: ChannelConfig) -> torch.Tensor:
    """Smooth random EQ plus tilt, in dB, ``(B, n_mels)``."""
    position = torch.linspace(0.0, 1.0, n_mels, device=draws.device)  # (n_mels,)
    n_cosines = 4
    frequency = draws.uniform(0.5, 3.0, n_cosines)  # cycles over the mel axis; (B, K)
    phase = draws.uniform(0.0, 2 * math.pi, n_cosines)
    amplitude = draws.uniform(-1.0, 1.0, n_cosines)
    # (B, K, n_mels) cosines summed over K; scaled so the peak is at most eq_db.
    curve = (amplitude[..., None] * torch.cos(2 * math.pi * frequency[..., None] * position + phase[..., None])).sum(1)
    curve = curve / curve.abs().amax(dim=1, keepdim=True).clamp_min(1e-6) * draws.uniform(0.0, config.eq_db)[:, None]
    tilt = draws.uniform(-config.tilt_db, config.tilt_db)[:, None] * (position - 0.5)  # (B, n_mels)
    return curve + tilt


def _band_limit_gain_db(draws: _Draws, centres: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
    """Roll-off above a random cut-off (and below 300 Hz for the telephone band), dB, ``(B, n_mels)``."""
    cutoffs = torch.tensor(config.band_limit_hz, device=draws.device)
    cutoff = cutoffs[draws.integers(len(config.band_limit_hz))][:, None]  # (B, 1)
    octaves_above = torch.log2(centres[None].clamp_min(1.0) / cutoff).clamp_min(0.0)  # (B, n_mels)
    gain = -80.0 * octaves_above.clamp(max=1.0) / 0.25  # a 320 dB/octave wall: 80 dB down within a quarter octave
    telephone = cutoff < 3500.0
    low_cut = torch.log2(300.0 / centres[None].clamp_min(1.0)).clamp_min(0.0) * -40.0  # 40 dB/octave below 300 Hz
    return gain.clamp_min(-120.0) + torch.where(telephone, low_cut, torch.zeros_like(low_cut))


def _reverberate(power: torch.Tensor, draws: _Draws, centres: torch.Tensor, frame_seconds: float,
                 config: ChannelConfig) -> torch.Tensor:
    """Per-band exponential reverberation of ``power (B, n_mels, T)``; returns the same shape."""
    batch, n_mels, frames = power.shape
    rt60_low = draws.uniform(*config.rt60_s)  # (B,)
    # High bands decay faster: the RT60 falls to half at the top of the mel range.
    shrink = 1.0 - 0.5 * (centres / centres.max()).to(power.device)  # (n_mels,)
    rt60 = rt60_low[:, None] * shrink[None]  # (B, n_mels)
    n_taps = min(frames, int(math.ceil(config.rt60_s[1] * 1.2 / frame_seconds)) + 1)
    lag = torch.arange(n_taps, device=power.device, dtype=power.dtype) * frame_seconds  # (K,)
    # Energy falls 60 dB over RT60: exp(-6.9 * t / RT60) in power.
    tail = torch.exp(-6.9078 * lag / rt60[..., None])  # (B, n_mels, K)
    tail[..., 0] = 0.0
    tail = tail / tail.sum(-1, keepdim=True).clamp_min(1e-8)  # unit reverberant energy
    drr = 10.0 ** (draws.uniform(*config.drr_db) / 10.0)  # (B,) direct / reverberant
    kernel = tail / drr[:, None, None]
    kernel[..., 0] = 1.0  # the direct path
    # Causal per-(utterance, band) convolution: groups = B * n_mels, kernel flipped for conv1d.
    padded = F.pad(power.reshape(1, batch * n_mels, frames), (n_taps - 1, 0))
    weight = kernel.flip(-1).reshape(batch * n_mels, 1, n_taps)
    return F.conv1d(padded, weight, groups=batch * n_mels).reshape(batch, n_mels, frames)


def _noise(power: torch.Tensor, mask: torch.Tensor, draws: _Draws, config: ChannelConfig) -> torch.Tensor:
    """Noise power ``(B, n_mels, T)`` at a random SNR to each utterance's mean power over its real frames."""
    batch, n_mels, frames = power.shape
    position = torch.linspace(0.0, 1.0, n_mels, device=power.device)
    # Coloured: a random slope (white to brown-ish) plus a smooth random bump, in dB.
    slope_db = draws.uniform(-30.0, 5.0)[:, None] * position
    bump_db = draws.uniform(0.0, 12.0)[:, None] * torch.exp(
        -0.5 * ((position - draws.uniform(0.0, 1.0)[:, None]) / draws.uniform(0.05, 0.3)[:, None]) ** 2)
    shape = 10.0 ** ((slope_db + bump_db) / 10.0)  # (B, n_mels)
    # Periodogram-like fluctuation of each (band, frame): a Gamma variate of mean 1, made from the
    # average of 4 squared normals (a mel band sums a few FFT bins).
    fluctuation = (draws.normal(n_mels, frames, 4) ** 2).mean(-1)  # (B, n_mels, T)
    coloured = shape[..., None] * fluctuation
    # Babble: the sum of three other utterances of the batch, each shifted in time.
    babble = torch.zeros_like(power)
    for _ in range(3):
        partner = (torch.arange(batch, device=power.device) + 1 + draws.integers(max(batch - 1, 1))) % batch
        shift = int(draws.integers(frames)[0]) if frames > 1 else 0
        babble = babble + torch.roll(power[partner], shifts=shift, dims=-1)
    use_babble = draws.chosen(config.babble_share)[:, None, None] & (batch > 1)
    noise = torch.where(use_babble, babble, coloured)
    weight = mask[:, None, :].to(power.dtype)  # (B, 1, T)
    signal_power = (power * weight).sum((1, 2)) / (weight.sum((1, 2)) * n_mels).clamp_min(1.0)
    noise_power = (noise * weight).sum((1, 2)) / (weight.sum((1, 2)) * n_mels).clamp_min(1.0)
    snr = 10.0 ** (draws.uniform(*config.snr_db) / 10.0)
    scale = signal_power / (snr * noise_power.clamp_min(1e-12))  # (B,)
    return noise * scale[:, None, None]


def corrupt(mel: torch.Tensor, config: ChannelConfig, generator: torch.Generator, mel_config: MelConfig,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pass each log-mel of ``mel (B, n_mels, T)`` through a random recording channel; returns ``(B, n_mels, T)``.

    ``mask (B, T)`` marks real frames (padding is left at the floor and ignored by the SNR).
    Each utterance is left clean with probability ``1 - config.probability``. The input is not changed.
    """
    batch, n_mels, frames = mel.shape
    draws = _Draws(batch, generator, mel.device)
    floor = math.log(mel_config.log_clamp)
    if mask is None:
        mask = torch.ones(batch, frames, device=mel.device)
    centres = mel_band_centres(mel_config).to(mel.device)
    frame_seconds = mel_config.hop_length / mel_config.sample_rate
    active = draws.chosen(config.probability)
    mel = mel.float()
    power = torch.exp(mel)

    gain_db = torch.zeros(batch, n_mels, device=mel.device)
    use_eq = active & draws.chosen(config.eq_probability)
    gain_db = gain_db + torch.where(use_eq[:, None], _eq_gain_db(draws, n_mels, config), gain_db)
    use_band_limit = active & draws.chosen(config.band_limit_probability)
    gain_db = gain_db + torch.where(use_band_limit[:, None], _band_limit_gain_db(draws, centres, config),
                                    torch.zeros_like(gain_db))
    corrupted = power * 10.0 ** (gain_db[..., None] / 10.0)

    use_reverb = active & draws.chosen(config.reverb_probability)
    reverberant = _reverberate(corrupted, draws, centres, frame_seconds, config)
    corrupted = torch.where(use_reverb[:, None, None], reverberant, corrupted)

    use_noise = active & draws.chosen(config.noise_probability)
    noise = _noise(corrupted, mask, draws, config)
    corrupted = corrupted + torch.where(use_noise[:, None, None], noise, torch.zeros_like(noise))

    out = torch.log(corrupted.clamp_min(mel_config.log_clamp))
    # Padding stays at the floor so masked frames remain what the model was trained to ignore.
    return torch.where(mask[:, None, :] > 0, out, torch.full_like(out, floor))
