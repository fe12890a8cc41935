"""Recording conditions for robustness evaluation, made on waveforms (never used in training).

Training corrupts *mels* (:mod:`voiceconv.training.channel`: random smooth EQ, steep band limits,
exponential per-band reverberation, stationary coloured and babble noise). The conditions here are
different in kind, so they test generalisation rather than memorised corruptions:

- ``eq``: a fixed "laptop microphone" filter cascade (2nd-order high-pass at 250 Hz, +9 dB presence
  peak at 3.5 kHz, -8 dB high shelf above 5 kHz) made with biquads on the waveform;
- ``phone``: 8 kHz telephone path: resampled to 8 kHz, G.711 mu-law 8-bit companding, resampled back;
- ``room``: a simulated room impulse response: direct path, 8 early reflections (3-30 ms) and a
  late tail of decaying noise with RT60 0.6 s whose high frequencies decay faster;
- ``noise``: non-stationary noise types absent from training: mains hum with a modulated fan,
  keyboard-like clicks, and synthetic music (harmonic chords), mixed at a given SNR.

Every function is seeded and returns float32 audio of the input's length at the input's rate.
"""

from __future__ import annotations

import math

import numpy as np

NOISE_TYPES = ("hum_fan", "clicks", "music")
CHANNELS = ("eq", "phone", "room")  # the recording-channel conditions of :func:`apply_channel`


def _biquad_peaking(frequency: float, gain_db: float, q: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    # RBJ audio-EQ cookbook peaking filter.
    amplitude = 10 ** (gain_db / 40)
    omega = 2 * math.pi * frequency / rate
    alpha = math.sin(omega) / (2 * q)
    b = np.array([1 + alpha * amplitude, -2 * math.cos(omega), 1 - alpha * amplitude])
    a = np.array([1 + alpha / amplitude, -2 * math.cos(omega), 1 - alpha / amplitude])
    return b / a[0], a / a[0]


def _biquad_high_shelf(frequency: float, gain_db: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    # RBJ cookbook high shelf with slope 1.
    amplitude = 10 ** (gain_db / 40)
    omega = 2 * math.pi * frequency / rate
    alpha = math.sin(omega) / 2 * math.sqrt(2)
    cos, root = math.cos(omega), 2 * math.sqrt(amplitude) * alpha
    plus, minus = amplitude + 1, amplitude - 1
    b = amplitude * np.array([plus + minus * cos + root, -2 * (minus + plus * cos), plus + minus * cos - root])
    a = np.array([plus - minus * cos + root, 2 * (minus - plus * cos), plus - minus * cos - root])
    return b / a[0], a / a[0]


def laptop_eq(audio: np.ndarray, rate: int) -> np.ndarray:
    """The ``eq`` condition: high-pass 250 Hz, +9 dB at 3.5 kHz, -8 dB shelf above 5 kHz."""
    from scipy import signal

    out = signal.sosfilt(signal.butter(2, 250.0, "highpass", fs=rate, output="sos"), audio)
    for b, a in (_biquad_peaking(3500.0, 9.0, 1.0, rate), _biquad_high_shelf(min(5000.0, 0.45 * rate), -8.0, rate)):
        out = signal.lfilter(b, a, out)
    return _keep_level(out, audio)


def telephone(audio: np.ndarray, rate: int) -> np.ndarray:
    """The ``phone`` condition: 8 kHz sampling and G.711 mu-law companding, back at ``rate``."""
    import soxr

    narrow = soxr.resample(audio.astype(np.float64), rate, 8000, quality="VHQ")
    mu = 255.0
    peak = max(float(np.abs(narrow).max()), 1e-9)
    x = np.clip(narrow / peak, -1.0, 1.0)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    quantised = np.round(companded * 127.0) / 127.0  # 8-bit code
    expanded = np.sign(quantised) * ((1 + mu) ** np.abs(quantised) - 1) / mu * peak
    wide = soxr.resample(expanded, 8000, rate, quality="VHQ")
    return _fit(wide, audio.size).astype(np.float32)


def room_impulse_response(rate: int, rt60: float = 0.6, seed: int = 0) -> np.ndarray:
    """A simulated room: direct path, 8 early reflections, and a frequency-dependent late tail."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    length = int(rt60 * 1.2 * rate)
    response = np.zeros(length)
    response[0] = 1.0
    for _ in range(8):
        delay = int(rng.uniform(0.003, 0.030) * rate)
        response[delay] += rng.uniform(0.2, 0.6) * rng.choice([-1.0, 1.0])
    start = int(0.02 * rate)
    time = np.arange(length - start) / rate
    tail = rng.standard_normal(length - start) * np.exp(-6.9078 * time / rt60)
    # A second, faster-decaying copy of the high band: air absorbs high frequencies first.
    high = signal.sosfilt(signal.butter(2, 3000.0, "highpass", fs=rate, output="sos"), tail)
    tail = tail - high + high * np.exp(-6.9078 * time / (0.5 * rt60)) / np.exp(-6.9078 * time / rt60)
    response[start:] += 0.35 * tail
    return response / np.sqrt(np.sum(response**2))


def reverberate(audio: np.ndarray, rate: int, seed: int = 0) -> np.ndarray:
    """The ``room`` condition: ``audio`` convolved with :func:`room_impulse_response`."""
    from scipy import signal

    wet = signal.fftconvolve(audio, room_impulse_response(rate, seed=seed))[: audio.size]
    return _keep_level(wet, audio)


def apply_channel(audio: np.ndarray, rate: int, channel: str, seed: int = 0) -> np.ndarray:
    """``audio`` through the named recording channel (one of :data:`CHANNELS`); ``seed`` picks the room."""
    if channel == "eq":
        return laptop_eq(audio, rate)
    if channel == "phone":
        return telephone(audio, rate)
    if channel == "room":
        return reverberate(audio, rate, seed=seed)
    raise ValueError(f"unknown channel {channel!r}; choose from {', '.join(CHANNELS)}")


def make_noise(kind: str, n_samples: int, rate: int, seed: int = 0) -> np.ndarray:
    """Unit-power noise of one of :data:`NOISE_TYPES`, ``(n_samples,)`` float64."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / rate
    if kind == "hum_fan":
        hum = sum(np.sin(2 * math.pi * 50.0 * k * t + rng.uniform(0, 2 * math.pi)) / k for k in range(1, 8))
        fan = signal.sosfilt(signal.butter(2, [150.0, 1500.0], "bandpass", fs=rate, output="sos"),
                             rng.standard_normal(n_samples))
        fan *= 1.0 + 0.6 * np.sin(2 * math.pi * 0.7 * t)  # blade-rate swell
        noise = hum / np.std(hum) + 2.0 * fan / np.std(fan)
    elif kind == "clicks":
        noise = np.zeros(n_samples)
        ring = np.exp(-np.arange(int(0.02 * rate)) / (0.003 * rate))
        for onset in np.flatnonzero(rng.random(n_samples) < 9.0 / rate):  # about 9 keystrokes per second
            resonance = np.sin(2 * math.pi * rng.uniform(1500, 5000) * np.arange(ring.size) / rate) * ring
            end = min(n_samples, onset + ring.size)
            noise[onset:end] += rng.uniform(0.3, 1.0) * resonance[: end - onset]
        noise += 0.05 * rng.standard_normal(n_samples) * np.std(noise)
    elif kind == "music":
        noise = np.zeros(n_samples)
        note = int(0.25 * rate)
        for start in range(0, n_samples, note):
            end = min(n_samples, start + note)
            root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
            for interval in (0, 4, 7):  # a major triad with 5 harmonics each
                f0 = root * 2 ** (interval / 12)
                for harmonic in range(1, 6):
                    if f0 * harmonic < rate / 2:
                        noise[start:end] += np.sin(2 * math.pi * f0 * harmonic * t[start:end]) / harmonic
            noise[start:end] *= np.exp(-np.arange(end - start) / (0.15 * rate))  # plucked decay
    else:
        raise ValueError(f"unknown noise type {kind!r}; choose one of {', '.join(NOISE_TYPES)}")
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def add_noise(audio: np.ndarray, rate: int, snr_db: float, kind: str, seed: int = 0) -> np.ndarray:
    """``audio`` plus :func:`make_noise` at ``snr_db`` against the audio's active-speech power.

    Active speech is the 50 ms frames within 40 dB of the loudest one, so leading and trailing
    silence do not make the noise quieter than the SNR says.
    """
    noise = make_noise(kind, audio.size, rate, seed)
    frame = max(1, int(0.05 * rate))
    frames = audio[: audio.size // frame * frame].reshape(-1, frame)  # (n_frames, frame)
    power = np.mean(frames.astype(np.float64) ** 2, axis=1) if frames.size else np.array([np.mean(audio**2)])
    active = power[power >= power.max() * 1e-4]
    speech_power = float(np.mean(active))
    mixed = audio + noise * math.sqrt(speech_power / 10 ** (snr_db / 10))
    peak = float(np.abs(mixed).max())
    return (mixed / peak * 0.95 if peak > 0.95 else mixed).astype(np.float32)


def _keep_level(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``out`` scaled to ``reference``'s RMS (and away from clipping)."""
    rms_out = float(np.sqrt(np.mean(out**2)))
    rms_ref = float(np.sqrt(np.mean(reference.astype(np.float64) ** 2)))
    scaled = out * (rms_ref / rms_out if rms_out > 0 else 1.0)
    peak = float(np.abs(scaled).max())
    return (scaled / peak * 0.95 if peak > 0.95 else scaled).astype(np.float32)


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    return audio[:length] if audio.size >= length else np.pad(audio, (0, length - audio.size))
