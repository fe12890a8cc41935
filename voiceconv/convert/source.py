"""Source recordings for conversion: read block by block at the model rate, and checked before any
work is done (readable, long enough, finite, not silent)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voiceconv.audio import SILENCE_PEAK, load_audio
from voiceconv.errors import AudioError

log = logging.getLogger(__name__)

MIN_SOURCE_SECONDS = 0.25  # shorter sources have too few frames for the 8x-subsampled content code
READ_BLOCK_SECONDS = 10.0  # source audio is decoded and resampled this many seconds at a time
_COMPRESSED = ("MP3", "OGG", "MPEG")
_MIN_DECODED_SHARE = 0.5  # as voiceconv.audio: a compressed stream decoding to less than this is truncated



class SourceAudio:
    """A source recording read block by block at ``sample_rate``, validated before conversion.

    Paths are decoded and resampled ``READ_BLOCK_SECONDS`` at a time (soxr's streaming resampler
    gives exactly what resampling the whole file would), so a one-hour file never sits in memory;
    arrays and ``(rate, array)`` tuples go through :func:`voiceconv.audio.load_audio`.
    """

    def __init__(self, source, sample_rate: int, source_rate: int | None = None,
                 min_seconds: float = MIN_SOURCE_SECONDS):
        self.sample_rate = int(sample_rate)
        self.min_seconds = min_seconds
        self.path: Path | None = None
        self._array: np.ndarray | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path = Path(source)
            self.name = str(source)
            self.file_rate, self.file_frames = _probe(self.path)
            seconds = self.file_frames / self.file_rate
        else:
            self.name = "<array input>"
            self._array = load_audio(source, self.sample_rate, source_rate=source_rate, min_duration=0.0)
            seconds = self._array.size / self.sample_rate
        if seconds < min_seconds:
            raise AudioError(f"{self.name}: audio is {seconds * 1000:.0f} ms long; conversion needs at least "
                             f"{min_seconds * 1000:.0f} ms: use a longer recording")

    @property
    def expected_samples(self) -> int:
        """Length at the model rate (exact for arrays; within a sample for files)."""
        if self._array is not None:
            return int(self._array.size)
        return int(round(self.file_frames * self.sample_rate / self.file_rate))

    @property
    def seconds(self) -> float:
        return self.expected_samples / self.sample_rate

    def blocks(self, block_seconds: float = READ_BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """Mono float32 blocks at the model rate; raises :class:`AudioError` on corrupt data."""
        block = max(1, int(block_seconds * self.sample_rate))
        if self._array is not None:
            for start in range(0, self._array.size, block):
                yield self._array[start : start + block]
            return
        yield from _file_blocks(self.path, self.sample_rate, int(block_seconds * self.file_rate), self.file_frames)

    def head(self, max_samples: int) -> tuple[np.ndarray, bool]:
        """The first ``max_samples`` samples at ``sample_rate``, decoded block by block (a one-hour
        file is never read whole); returns ``(audio (T,), truncated)``."""
        blocks, total = [], 0
        for block in self.blocks():
            blocks.append(block)
            total += block.size
            if total >= max_samples:
                break
        audio = np.concatenate(blocks)[:max_samples] if blocks else np.zeros(0, np.float32)
        return audio, total > max_samples

    def scan(self, f0: bool = False):
        """Check the whole file decodes, is finite and not silent; with ``f0``, its :class:`F0Stats`."""
        from voiceconv.convert.pitch import F0Stats

        stats = F0Stats() if f0 else None
        peak = 0.0
        for block in self.blocks():
            if not np.isfinite(np.sum(block, dtype=np.float64)):
                raise AudioError(f"{self.name}: {int((~np.isfinite(block)).sum())} samples are NaN or Inf; the file "
                                 "is corrupt or was written wrongly: re-export it")
            peak = max(peak, float(np.abs(block).max(initial=0.0)))
            if stats is not None:
                stats.update(block, self.sample_rate)
        if peak < SILENCE_PEAK:
            raise AudioError(f"{self.name}: audio is silent (peak below -80 dBFS); record or choose a clip with speech")
        return stats


def check_source(source, sample_rate: int, source_rate: int | None = None,
                 min_seconds: float = MIN_SOURCE_SECONDS) -> None:
    """Raise the one-line ``AudioError`` a conversion of ``source`` would, without converting it.

    Checks that it is readable, long enough, finite and not silent (one decoding pass, block by
    block); callers run it before embedding targets, so a bad source fails before that work.
    """
    SourceAudio(source, sample_rate, source_rate, min_seconds=min_seconds).scan()


def _probe(path: Path) -> tuple[int, int]:
    """(rate, declared frames) of an audio file, with the same one-line errors as ``load_audio``."""
    from voiceconv.audio import _check_rate, _libsndfile_reason, check_audio_path

    name = check_audio_path(path)
    try:
        with sf.SoundFile(str(path)) as handle:
            rate = _check_rate(handle.samplerate, name, "the header is corrupt or the format is unusual; re-export "
                               "the file at a standard rate such as 16000, 22050, 44100 or 48000 Hz")
            frames = max(int(handle.frames), 0)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as error:
        if isinstance(error, AudioError):
            raise
        raise AudioError(f"{name}: not a readable audio file ({_libsndfile_reason(error)}); convert it to WAV, "
                         "FLAC, OGG/Vorbis or MP3") from None
    if frames == 0:
        raise AudioError(f"{name}: contains no audio samples; re-export or re-download it")
    return rate, frames


def _file_blocks(path: Path, sample_rate: int, block: int, declared: int) -> Iterator[np.ndarray]:
    from voiceconv.audio import _libsndfile_reason

    name = str(path)
    resampler = None
    decoded = 0
    with sf.SoundFile(str(path)) as handle:
        rate = handle.samplerate
        if rate != sample_rate:
            resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="VHQ")
        compressed = handle.format in _COMPRESSED
        pending = None
        while True:
            try:
                # A read loop rather than SoundFile.blocks(), which trusts the declared length.
                data = handle.read(max(block, 1), dtype="float32", always_2d=True)  # (frames, C)
            except (sf.SoundFileError, RuntimeError) as error:
                raise AudioError(f"{name}: the audio data is corrupt ({_libsndfile_reason(error)}); re-export or "
                                 "re-download the file") from None
            mono = data.mean(axis=1) if len(data) else None  # (frames,): downmix each block as it comes
            decoded += 0 if mono is None else mono.size
            # Hold one block back so the resampler knows which block is the last (it flushes its filter).
            if pending is not None:
                yield pending if resampler is None else resampler.resample_chunk(pending, last=mono is None)
            if mono is None:
                break
            pending = mono
    if compressed and decoded < _MIN_DECODED_SHARE * declared:
        raise AudioError(f"{name}: decoding stopped after {decoded / rate:.2f} s of the "
                         f"{declared / rate:.2f} s the header declares; the file is truncated or "
                         "corrupt: re-encode or re-download it")
