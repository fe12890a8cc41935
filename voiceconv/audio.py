"""Audio in and out: any format, rate, bit depth and channel count -> mono float32 at one rate.

soundfile (libsndfile >= 1.1) reads WAV, FLAC, OGG/Vorbis and MP3 with no system packages;
soxr resamples at very high quality. Bad input raises :class:`AudioError` (a ``ValueError``) with
a one-line message that names the file and says what to do, never a library traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr
import torch

from voiceconv.errors import AudioError

AudioLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, tuple]

MIN_RATE = 1000  # below this no file is speech; it is a corrupt header or a mistake
MAX_RATE = 768000  # highest rate any real recorder produces
SILENCE_PEAK = 1e-4  # -80 dBFS: quieter than any real recording's noise floor


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<array input>"


def _check_rate(rate, what: str) -> int:
    if not isinstance(rate, (int, np.integer)) and not (isinstance(rate, float) and rate.is_integer()):
        raise AudioError(f"{what}: sample rate {rate!r} is not a whole number of Hz")
    rate = int(rate)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{what}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz")
    return rate


def _to_mono(samples: np.ndarray, name: str) -> np.ndarray:
    """(T,), (C, T) or (T, C) -> (T,). Several channels are averaged."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(f"{name}: expected 1-D or 2-D audio, got shape {tuple(samples.shape)}")
    # soundfile gives (T, C); torch code usually gives (C, T). Channels are the short axis.
    channel_axis = 0 if samples.shape[0] < samples.shape[1] else 1
    return samples.mean(axis=channel_axis)


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    name = str(path)
    if not path.exists():
        raise AudioError(f"{name}: file not found")
    if path.is_dir():
        raise AudioError(f"{name}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: file is empty (0 bytes)")
    try:
        # always_2d gives (T, C) for every channel count; float32 scales any integer depth to [-1, 1].
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        reason = str(error).split(":")[-1].strip() or type(error).__name__
        raise AudioError(
            f"{name}: not a readable audio file ({reason}); supported formats are WAV, FLAC, OGG/Vorbis and MP3"
        ) from None
    except Exception as error:  # libsndfile can raise odd errors on corrupt MP3/OGG streams
        raise AudioError(f"{name}: could not decode audio ({type(error).__name__}: {error})") from None
    return samples.mean(axis=1), _check_rate(rate, name)


def _from_array(source, source_rate, sample_rate) -> tuple[np.ndarray, int]:
    if isinstance(source, tuple):
        # Gradio's audio component gives (rate, samples).
        if len(source) != 2:
            raise AudioError("tuple audio input must be (sample_rate, samples)")
        first, second = source
        source_rate, source = (first, second) if np.isscalar(first) else (second, first)
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    samples = np.asarray(source)
    if samples.dtype.kind in "iu":
        # Integer PCM: scale by the type's full range, as soundfile does for files.
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
    elif samples.dtype.kind != "f":
        raise AudioError(f"<array input>: unsupported sample type {samples.dtype}")
    rate = sample_rate if source_rate is None else _check_rate(source_rate, "<array input>")
    return _to_mono(samples.astype(np.float32), "<array input>"), rate


def load_audio(
    source: AudioLike,
    sample_rate: int,
    *,
    source_rate: int | None = None,
    min_duration: float = 0.05,
    allow_silence: bool = False,
) -> np.ndarray:
    """Load ``source`` as mono float32 at ``sample_rate``.

    ``source`` is a path (WAV/FLAC/OGG/MP3, any rate, depth and channel count), an array or tensor
    ``(T,)`` / ``(C, T)`` / ``(T, C)`` at ``source_rate`` (default: already at ``sample_rate``), or a
    Gradio-style ``(rate, samples)`` tuple. Returns ``(T,)`` float32.

    Raises :class:`AudioError` for missing, unreadable, empty, too-short (under ``min_duration``
    seconds), non-finite or (unless ``allow_silence``) all-silent input.
    """
    sample_rate = _check_rate(sample_rate, "requested output")
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        samples, rate = _read_file(Path(source))
    else:
        samples, rate = _from_array(source, source_rate, sample_rate)
    if samples.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(f"{name}: {bad} samples are NaN or Inf; the file is corrupt or was written wrongly")
    duration = samples.size / rate
    if duration < min_duration:
        raise AudioError(
            f"{name}: audio is {duration * 1000:.0f} ms long; at least {min_duration * 1000:.0f} ms is needed"
        )
    if not allow_silence and float(np.abs(samples).max()) < SILENCE_PEAK:
        raise AudioError(f"{name}: audio is silent (peak below -80 dBFS); record or choose a clip with speech")
    if rate != sample_rate:
        samples = soxr.resample(samples, rate, sample_rate, quality="VHQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def peak_normalize(audio: np.ndarray, peak_db: float = -1.0) -> np.ndarray:
    """Scale so the absolute peak sits at ``peak_db`` dBFS. Silent input is returned unchanged."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < SILENCE_PEAK:
        return audio
    return (audio * (10 ** (peak_db / 20) / peak)).astype(np.float32)


def loudness_normalize(audio: np.ndarray, target_db: float = -23.0, peak_db: float = -1.0) -> np.ndarray:
    """Scale to ``target_db`` dBFS RMS over the active (non-silent) part, never past ``peak_db``.

    RMS over the frames louder than 40 dB below the loudest frame, a simple stand-in for gated
    loudness that does not need an extra dependency.
    """
    if audio.size < 512:
        return peak_normalize(audio, peak_db)
    frames = np.lib.stride_tricks.sliding_window_view(audio, 512)[::256]
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    active = rms[rms > rms.max() * 10 ** (-40 / 20)]
    level = np.sqrt((active**2).mean())
    if level < SILENCE_PEAK:
        return audio
    gain = 10 ** (target_db / 20) / level
    peak = float(np.abs(audio).max()) * gain
    gain *= min(1.0, 10 ** (peak_db / 20) / peak)
    return (audio * gain).astype(np.float32)


def trim_silence(audio: np.ndarray, sample_rate: int, top_db: float = 40.0, margin: float = 0.05) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``top_db`` below the peak, keeping ``margin`` s."""
    import librosa

    if audio.size == 0:
        return audio
    _, (start, end) = librosa.effects.trim(audio, top_db=top_db, frame_length=1024, hop_length=256)
    pad = int(margin * sample_rate)
    return audio[max(0, start - pad) : min(audio.size, end + pad)]


def save_audio(path: str | os.PathLike, audio, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``audio`` ``(T,)`` atomically: to a temporary file beside ``path``, then rename.

    A reader never sees a half-written file, and a killed writer leaves no partial output.
    The format follows the extension (.wav, .flac, .ogg, .mp3).
    """
    path = Path(path)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: refusing to write audio containing NaN or Inf")
    audio = np.clip(audio, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    formats = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}
    if suffix not in formats:
        raise AudioError(f"{path}: unsupported output extension {suffix!r}; use one of {sorted(formats)}")
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[formats[suffix]]
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(handle)
    try:
        sf.write(temp_name, audio, sample_rate, format=formats[suffix], subtype=subtype)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path
