"""Audio in and out: any format, rate, bit depth and channel count -> mono float32 at one rate.

soundfile (libsndfile >= 1.1) reads WAV, FLAC, OGG/Vorbis and MP3 with no system packages;
soxr resamples at very high quality. Bad input raises :class:`AudioError` (a ``ValueError``) with
a one-line message that names the file and says what to do, never a library traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr
import torch

from voiceconv.atomic import atomic_path
from voiceconv.errors import AudioError

AudioLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, tuple]

MIN_RATE = 1000  # below this no file is speech; it is a corrupt header or a mistake
MAX_RATE = 768000  # highest rate any real recorder produces
MAX_CHANNELS = 64  # third-order ambisonics; an array with more "channels" is a batch passed by mistake
SILENCE_PEAK = 1e-4  # -80 dBFS: quieter than any real recording's noise floor
READ_BLOCK = 1 << 16  # frames per block when decoding: bounds memory to one block of every channel
# A compressed stream that decodes to less than this share of the length its header declares is
# broken (libsndfile's MP3 decoder resyncs past garbage and silently stops early); a small shortfall
# is only logged, because the declared length of VBR files without a Xing/LAME tag is an estimate.
MIN_DECODED_SHARE = 0.5
MAX_PREALLOCATE = 1 << 26  # samples (256 MB of float32, 25 min at 44.1 kHz) reserved before decoding

logger = logging.getLogger(__name__)


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<array input>"


def check_audio_path(path: Path) -> str:
    """Refuse a missing, directory, unreadable or empty path with a one-line error; return its name."""
    name = str(path)
    if not path.exists():
        raise AudioError(f"{name}: file not found; check the path")
    if path.is_dir():
        raise AudioError(f"{name}: is a directory, not an audio file; pass a WAV, FLAC, OGG or MP3 file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{name}: permission denied; make the file readable")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: file is empty (0 bytes); re-export or re-download it")
    return name


def _check_rate(rate, what: str, fix: str) -> int:
    """Validate a sample rate; ``what`` prefixes the message and ``fix`` says what to do."""
    if isinstance(rate, bool) or not (
        isinstance(rate, (int, np.integer)) or (isinstance(rate, (float, np.floating)) and float(rate).is_integer())
    ):
        raise AudioError(f"{what}: sample rate {rate!r} is not a whole number of Hz; {fix}")
    rate = int(rate)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{what}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz; {fix}")
    return rate


def _to_mono(samples: np.ndarray, name: str) -> np.ndarray:
    """(T,), (C, T) or (T, C) -> (T,). Several channels are averaged.

    The channel axis is the short one. Arrays whose layout cannot be told apart (a square array) or
    whose short axis is longer than any real channel count (a batch of clips) are refused rather
    than silently averaged into nonsense.
    """
    if samples.ndim > 2:
        # (1, 1, T) and similar carry no extra information; anything else is a batch.
        samples = samples.squeeze()
        if samples.ndim > 2:
            raise AudioError(
                f"{name}: expected audio of shape (T,), (C, T) or (T, C), got {tuple(samples.shape)}; pass one clip at "
                "a time"
            )
    if samples.ndim == 1:
        return samples
    if samples.ndim == 0:
        return samples.reshape(1)  # a single sample: rejected later as too short
    short, long = sorted(samples.shape)
    if short == long and short > 1:
        raise AudioError(
            f"{name}: cannot tell channels from time in a {samples.shape[0]}x{samples.shape[1]} array; pass mono "
            "audio of shape (T,)"
        )
    if short > MAX_CHANNELS:
        raise AudioError(
            f"{name}: got shape {tuple(samples.shape)}, which has more than {MAX_CHANNELS} channels on either axis; "
            "expected (T,), (C, T) or (T, C): pass one clip at a time"
        )
    # soundfile gives (T, C); torch code usually gives (C, T). Channels are the short axis.
    channel_axis = 0 if samples.shape[0] < samples.shape[1] else 1
    return samples.mean(axis=channel_axis)


def _libsndfile_reason(error: Exception) -> str:
    """The useful part of a libsndfile error, without the "Error opening 'path':" prefix."""
    reason = getattr(error, "error_string", None) or str(error)
    reason = reason.strip().rstrip(".")
    if reason.startswith("Error : "):
        reason = reason[len("Error : ") :]
    if "does not exist or is not a regular file" in reason:
        # libsndfile says this when no decoder recognises the bytes (e.g. random data named .mp3);
        # the file does exist, so repeating it would send the user looking in the wrong place.
        reason = "format not recognised"
    return reason or type(error).__name__


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 ``(T,)`` plus its rate, one block at a time.

    Reading blocks and averaging channels as we go keeps peak memory near one mono copy of the
    audio, instead of ``channels`` float32 copies as ``soundfile.read`` would need for a long
    6-channel file.
    """
    name = check_audio_path(path)
    try:
        handle = sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(
            f"{name}: not a readable audio file ({_libsndfile_reason(error)}); convert it to WAV, FLAC, OGG/Vorbis "
            "or MP3"
        ) from None
    with handle:
        rate = _check_rate(
            handle.samplerate, name, "the header is corrupt or the format is unusual; re-export the file at a "
            "standard rate such as 16000, 22050, 44100 or 48000 Hz"
        )
        declared = max(int(handle.frames), 0)
        # Preallocate what the header declares, capped so a corrupt header cannot demand terabytes;
        # anything beyond the cap (or beyond an under-declared length) is appended block by block.
        mono = np.empty(min(declared, MAX_PREALLOCATE), np.float32)
        filled, extra = 0, []
        try:
            # always_2d gives (frames, C) for every channel count; float32 scales any integer depth to [-1, 1].
            # A plain read loop, not SoundFile.blocks(): blocks() trusts the declared length and yields
            # its whole (uninitialised) buffer when a broken stream decodes short; read() does not.
            while True:
                block = handle.read(READ_BLOCK, dtype="float32", always_2d=True)  # (frames, C)
                if not len(block):
                    break
                block = block.mean(axis=1)  # (frames,): downmix now so only one block of every channel is held
                room = min(len(block), len(mono) - filled)
                mono[filled : filled + room] = block[:room]
                filled += room
                if room < len(block):
                    extra.append(block[room:])  # the header under-declared the length
        except (sf.SoundFileError, RuntimeError) as error:
            raise AudioError(
                f"{name}: the audio data is corrupt ({_libsndfile_reason(error)}); re-export or re-download the file"
            ) from None
        except MemoryError:
            raise AudioError(f"{name}: too long to decode into memory; split it into shorter files") from None
        compressed = handle.format in ("MP3", "OGG", "MPEG")
    if extra:
        mono = np.concatenate([mono, *extra])
        filled = len(mono)
    if filled < declared:
        if compressed and filled < MIN_DECODED_SHARE * declared:
            raise AudioError(
                f"{name}: decoding stopped after {filled / rate:.2f} s of the {declared / rate:.2f} s the header "
                "declares; the file is truncated or corrupt: re-encode or re-download it"
            )
        if compressed:
            logger.warning("%s: decoded %d of %d declared samples; the file may be truncated", name, filled, declared)
        mono = mono[:filled]
    return mono, rate


def _from_array(source, source_rate, sample_rate) -> tuple[np.ndarray, int]:
    name = "<array input>"
    if isinstance(source, tuple):
        # Gradio's audio component gives (rate, samples).
        if len(source) != 2:
            raise AudioError(f"{name}: tuple audio input must be (sample_rate, samples)")
        first, second = source
        source_rate, source = (first, second) if np.isscalar(first) else (second, first)
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu()
        if source.is_floating_point() and source.dtype not in (torch.float32, torch.float64):
            source = source.float()  # bfloat16 has no NumPy equivalent; float16 is widened for the mean
        source = source.numpy()
    samples = np.asarray(source)
    if samples.dtype.kind in "iu":
        # Integer PCM: scale by the type's full range, as soundfile does for files.
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
    elif samples.dtype.kind != "f":
        raise AudioError(f"{name}: unsupported sample type {samples.dtype}; pass float or integer PCM samples")
    fix = "pass the rate the samples were recorded at, e.g. source_rate=16000"
    rate = sample_rate if source_rate is None else _check_rate(source_rate, name, fix)
    return _to_mono(samples.astype(np.float32), name), rate


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

    Raises :class:`AudioError` for missing, unreadable, corrupt, empty, too-short (under
    ``min_duration`` seconds), non-finite or (unless ``allow_silence``) all-silent input, and for
    sample rates outside 1 kHz-768 kHz. Every message is one line naming the input.
    """
    name = _describe(source)
    sample_rate = _check_rate(
        sample_rate, f"{name}: requested output", "ask for the model's rate, e.g. 16000 or 22050"
    )
    if isinstance(source, (str, os.PathLike)):
        samples, rate = _read_file(Path(source))
    else:
        samples, rate = _from_array(source, source_rate, sample_rate)
    is_file = isinstance(source, (str, os.PathLike))
    if samples.size == 0:
        fix = "re-export or re-download it" if is_file else "pass a non-empty array"
        raise AudioError(f"{name}: contains no audio samples; {fix}")
    # A float64 sum is NaN/Inf exactly when some sample is (float32 values cannot overflow it), and
    # unlike np.isfinite(samples) it needs no temporary array the size of the audio.
    if not np.isfinite(np.sum(samples, dtype=np.float64)):
        bad = int((~np.isfinite(samples)).sum())
        fix = "the file is corrupt or was written wrongly; re-export it" if is_file else "check the array"
        raise AudioError(f"{name}: {bad} samples are NaN or Inf; {fix}")
    duration = samples.size / rate
    if duration < min_duration:
        raise AudioError(
            f"{name}: audio is {duration * 1000:.1f} ms long but at least {min_duration * 1000:.0f} ms is needed; "
            "use a longer recording"
        )
    if not allow_silence and max(float(samples.max()), -float(samples.min())) < SILENCE_PEAK:
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
    """Cut leading and trailing parts quieter than ``top_db`` below the loudest frame, keeping ``margin`` s.

    The same rule as ``librosa.effects.trim`` (centred 1024-sample frames every 256 samples, frame
    RMS in dB relative to the loudest frame), written in NumPy: librosa's version costs seconds of
    JIT warm-up in every fresh process, which ``prepare``'s worker processes would each pay.
    """
    if audio.size == 0:
        return audio
    frame_length, hop = 1024, 256
    padded = np.pad(np.asarray(audio, np.float64), frame_length // 2)  # centred frames, zero padding
    n_frames = 1 + (len(padded) - frame_length) // hop
    # Frame energies from one running sum of squares: O(T), instead of summing every overlapping frame.
    energy = np.concatenate([[0.0], np.cumsum(padded * padded)])
    starts = np.arange(n_frames) * hop
    rms = np.sqrt(np.maximum(energy[starts + frame_length] - energy[starts], 0.0) / frame_length)
    db = 20 * np.log10(np.maximum(rms, 1e-5))
    loud = np.flatnonzero(db > db.max() - top_db)
    start, end = int(loud[0]) * hop, min(audio.size, (int(loud[-1]) + 1) * hop)
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
    audio = np.asarray(audio, dtype=np.float32)
    if sum(size > 1 for size in audio.shape) > 1:
        raise AudioError(f"{path}: save_audio writes mono audio of shape (T,), got {audio.shape}; pass one channel")
    audio = audio.reshape(-1)  # (T,): drops singleton batch/channel axes such as (1, T)
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: refusing to write audio containing NaN or Inf; check the model output")
    audio = np.clip(audio, -1.0, 1.0)
    suffix = path.suffix.lower()
    formats = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}
    if suffix not in formats:
        raise AudioError(f"{path}: unsupported output extension {suffix!r}; use one of {', '.join(sorted(formats))}")
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[formats[suffix]]
    try:
        with atomic_path(path, suffix) as temp:
            sf.write(str(temp), audio, sample_rate, format=formats[suffix], subtype=subtype)
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        # e.g. MP3 only exists at 8-48 kHz; libsndfile's own message names the temporary file.
        raise AudioError(
            f"{path}: cannot write {formats[suffix]} {subtype} at {sample_rate} Hz ({_libsndfile_reason(error)}); "
            "write a .wav or .flac file instead"
        ) from None
    return path
