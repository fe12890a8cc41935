"""What visitors give the demo: the bundled gallery voices, the shared speaker-embedding cache, and the
checks every uploaded or recorded clip passes before any model work."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voiceconv.demo.config import GALLERY_DIR, QUIET_PEAK_DB
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------
# gallery


@dataclass(frozen=True)
class GalleryVoice:
    id: str
    path: Path
    label: str
    attribution: str
    license: str


def load_gallery(directory: str | Path = GALLERY_DIR) -> list[GalleryVoice]:
    """Read ``gallery.json`` in ``directory``; every listed file must exist."""
    directory = Path(directory)
    index = directory / "gallery.json"
    try:
        entries = json.loads(index.read_text())["voices"]
    except (OSError, ValueError, KeyError) as error:
        raise VoiceconvError(f"{index}: cannot read the gallery index ({error}); reinstall voiceconv") from None
    voices = []
    for entry in entries:
        path = directory / entry["file"]
        if not path.is_file():
            raise VoiceconvError(f"{path}: gallery file listed in {index.name} is missing; reinstall voiceconv")
        voices.append(GalleryVoice(entry["id"], path, entry["label"], entry["attribution"], entry["license"]))
    return voices


# ---------------------------------------------------------------------------------------------------
# speaker-embedding cache


class SpeakerCache:
    """Process-wide cache of gallery speakers, keyed by ``(model name, voice id)``.

    ``encodes`` counts how many times a speaker was actually computed, so tests can check that a
    gallery voice is encoded once however many conversions use it. One lock per key: two visitors
    asking for the same new voice wait for one computation instead of doing it twice.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Any] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.encodes = 0

    def get(self, key: tuple[str, str], compute: Callable[[], Any]) -> Any:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._items:
                self._items[key] = compute()
                with self._guard:
                    self.encodes += 1
            return self._items[key]

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------------------------------
# input checks


def user_error(message: str):
    """A ``gr.Error`` that the page shows as a toast; no server traceback (it is the visitor's input)."""
    import gradio as gr

    return gr.Error(message, print_exception=False)


def _clean(message: str, path: str | os.PathLike | None) -> str:
    """Drop Gradio's temporary folder from a message: the visitor knows their file by its name only."""
    if path is not None:
        message = message.replace(str(path), Path(path).name)
    return message


def load_clip(path: str | None, sample_rate: int, what: str, min_seconds: float, max_seconds: float) -> np.ndarray:
    """Decode an uploaded or recorded clip to ``(T,)`` float32 at ``sample_rate``, or raise a readable ``gr.Error``.

    Rejects: no file, unreadable/wrong format, shorter than ``min_seconds``, longer than
    ``max_seconds`` (checked from the header first, so a long file is not decoded), and silence.
    """
    import soundfile as sf

    from voiceconv.audio import load_audio

    if not path:
        raise user_error(f"{what}: no audio yet. Upload a file or record from the microphone.")
    name = Path(path).name
    try:
        header_seconds = sf.info(str(path)).duration
    except Exception:  # unreadable header: load_audio below gives the precise message
        header_seconds = None
    if header_seconds is not None and header_seconds > max_seconds:
        raise user_error(
            f"{what}: {name} is {header_seconds:.1f} s long; this demo accepts up to {max_seconds:.0f} s. "
            "Trim it or use the 'voiceconv convert' command for long recordings."
        )
    try:
        audio = load_audio(path, sample_rate, min_duration=min_seconds)
    except VoiceconvError as error:
        raise user_error(f"{what}: {_clean(str(error), path)}") from None
    seconds = audio.size / sample_rate
    if seconds > max_seconds:
        raise user_error(
            f"{what}: {name} is {seconds:.1f} s long; this demo accepts up to {max_seconds:.0f} s. "
            "Trim it or use the 'voiceconv convert' command for long recordings."
        )
    peak_db = 20 * math.log10(max(float(np.abs(audio).max()), 1e-12))
    if peak_db < QUIET_PEAK_DB:
        raise user_error(
            f"{what}: {name} is silent or almost silent (peak {peak_db:.0f} dBFS). "
            "Check the microphone level or choose a clip with speech."
        )
    return audio


def describe_audio(path: str | None) -> str:
    """One line for the page: duration, rate and channels from the file header."""
    import soundfile as sf

    if not path:
        return ""
    try:
        info = sf.info(str(path))
    except Exception:
        return f"**{Path(path).name}**: not a readable audio file (use WAV, FLAC, OGG/Vorbis or MP3)."
    channels = {1: "mono", 2: "stereo"}.get(info.channels, f"{info.channels} channels")
    return f"Duration **{info.duration:.2f} s** · {info.samplerate} Hz · {channels}"
