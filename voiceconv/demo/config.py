"""The demo's settings (:class:`DemoConfig`) and the names its parts share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

GALLERY_DIR = Path(__file__).parent.parent / "gallery"  # voiceconv/gallery
NEURAL = "neural"
GRIFFIN_LIM = "griffin-lim"
DEFAULT_MODEL_NAME = "default"
QUIET_PEAK_DB = -50.0  # real speech peaks above about -30 dBFS; a clip whose peak is below -50 dBFS is silence
BLEND_NONE = "none"  # the "Blend with" choice that blends nothing



@dataclass
class DemoConfig:
    """Everything ``voiceconv demo`` can set. Paths may be ``str``; they are resolved when loading."""

    models: list[str] = field(default_factory=list)  # model dirs; empty = the shipped default (voiceconv/pretrained/vc)
    vocoder: str | None = None  # neural vocoder dir; None = the shipped default when installed, else Griffin-Lim only
    device: str | None = None  # None = CUDA if available, else CPU (as every loader in voiceconv)
    max_file_size: int = 20_000_000  # bytes per upload: 20 MB holds 10 min of 16-bit 16 kHz mono WAV
    min_seconds: float = 0.5  # shorter clips carry too few frames for the speaker encoder or a useful result
    max_seconds: float = 30.0  # per source clip: about 10 s of compute on 2 CPU cores with the neural vocoder
    max_reference_seconds: float = 60.0  # total over a visitor's reference clips; more adds nothing to the embedding
    concurrency_limit: int = 1  # conversions at once; on 2 cores a second parallel job only slows both
    queue_size: int = 32  # waiting requests before new ones are turned away with "queue full"
    delete_cache: tuple[int, int] | None = (1800, 7200)  # every 30 min delete uploads/results older than 2 h
    session_capacity: int = 500  # sessions Gradio keeps (oldest dropped first): ~0.1 MB each plus any custom voice
    custom_voice_ttl: float = 3 * 3600.0  # seconds a visitor's own voice is kept after it was set (a long visit)

    def __post_init__(self) -> None:
        if self.min_seconds <= 0 or self.max_seconds <= self.min_seconds:
            raise VoiceconvError(
                f"demo: need 0 < min_seconds < max_seconds, got {self.min_seconds} and {self.max_seconds}"
            )
        if self.max_file_size <= 0:
            raise VoiceconvError(f"demo: max_file_size must be a positive number of bytes, got {self.max_file_size}")
        if self.session_capacity < 1:
            raise VoiceconvError(f"demo: session_capacity must be at least 1, got {self.session_capacity}")
        if self.concurrency_limit < 1:
            raise VoiceconvError(f"demo: concurrency_limit must be at least 1, got {self.concurrency_limit}")
