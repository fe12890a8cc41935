"""Independent judges: pretrained models that voiceconv never trains on and never imports in training.

- Speaker: Resemblyzer's GE2E d-vector encoder (Wan et al. 2018; weights ship in the resemblyzer
  0.1.4 wheel), on the CPU.
- Content: pocketsphinx 5 (CMU Sphinx en-US acoustic model, language model and dictionary from the
  wheel).
- Pitch and spectral envelope: WORLD (pyworld): DIO + StoneMask F0 and CheapTrick envelopes.

Every judge works at :data:`EVAL_RATE` (16 kHz), the rate Resemblyzer and pocketsphinx were trained
at; callers resample with :func:`voiceconv.audio.load_audio`. The packages are optional (the
``[eval]`` extra): each is imported on first use, and a missing one raises
:class:`JudgeMissingError` naming the install command.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import numpy as np

from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

EVAL_RATE = 16000  # Resemblyzer and pocketsphinx both expect 16 kHz
FRAME_PERIOD_MS = 5.0  # WORLD analysis hop, the usual 5 ms for MCD and F0
F0_FLOOR = 50.0  # Hz: below the lowest adult male F0 (about 60 Hz)
F0_CEIL = 600.0  # Hz: above high-pitched female and child speech, below DIO's default 800 to cut octave errors

# resemblyzer declares a dependency on `webrtcvad`, whose sdist fails to import with setuptools >= 81,
# and on a `typing` backport; webrtcvad-wheels provides the same module as a binary wheel.
INSTALL_COMMAND = (
    "pip install webrtcvad-wheels && pip install --no-deps resemblyzer==0.1.4 && "
    "pip install pocketsphinx pyworld-prebuilt"
)


class JudgeMissingError(VoiceconvError):
    """An optional evaluation package is not installed."""


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise JudgeMissingError(
            f"the evaluation judge '{package}' is not installed ({error}); install the judges with: {INSTALL_COMMAND}"
        ) from None


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise ValueError("judge input has no samples")
    return audio


class SpeakerJudge:
    """Resemblyzer d-vectors: ``embed(audio (T,) at 16 kHz) -> (256,)`` unit vector."""

    name = "Resemblyzer 0.1.4 GE2E VoiceEncoder (256-d d-vector, LSTM 3x256)"

    def __init__(self) -> None:
        resemblyzer = _require("resemblyzer", "resemblyzer")
        _require("webrtcvad", "webrtcvad-wheels")
        self._audio = importlib.import_module("resemblyzer.audio")
        self._encoder = resemblyzer.VoiceEncoder(device="cpu", verbose=False)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        audio = _check_audio(audio)
        # Resemblyzer's own preprocessing (volume normalisation, VAD-based removal of long pauses)
        # is how its encoder was trained, so we apply it (the input is already at its 16 kHz).
        processed = self._audio.preprocess_wav(audio, source_sr=None)
        if processed.size < 0.3 * EVAL_RATE:
            # The VAD can drop nearly everything from very short or non-speech input: keep the clip.
            log.debug("Resemblyzer VAD kept %d of %d samples; embedding the whole clip", processed.size, audio.size)
            processed = self._audio.normalize_volume(audio, -30, increase_only=True)  # -30 dBFS: its hparams
        return np.asarray(self._encoder.embed_utterance(processed), dtype=np.float64)


class AsrJudge:
    """pocketsphinx: ``transcribe(audio (T,) at 16 kHz) -> lower-case words`` ("" when nothing is heard)."""

    name = "pocketsphinx 5 (CMU Sphinx en-US acoustic model + language model shipped in the wheel)"

    def __init__(self) -> None:
        pocketsphinx = _require("pocketsphinx", "pocketsphinx")
        self._decoder = pocketsphinx.Decoder(samprate=EVAL_RATE, loglevel="FATAL")

    def transcribe(self, audio: np.ndarray) -> str:
        audio = _check_audio(audio)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")  # pocketsphinx takes 16-bit PCM bytes
        # The front end carries state (cepstral mean and noise estimates) from one utterance to the
        # next, so the same clip decodes differently after different clips. Resetting it (cheap, unlike
        # reloading the models) makes every transcript a function of its own audio only.
        self._decoder.reinit_feat()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr.strip() if hypothesis is not None else ""


@dataclass
class WorldFeatures:
    """WORLD analysis of one clip: ``f0 (T,)`` Hz (0 = unvoiced), ``envelope (T, fft // 2 + 1)`` power."""

    f0: np.ndarray
    envelope: np.ndarray


class WorldJudge:
    """WORLD vocoder analysis (pyworld): F0 by DIO refined by StoneMask, envelope by CheapTrick."""

    name = (
        f"WORLD (pyworld {FRAME_PERIOD_MS:g} ms frames; DIO+StoneMask F0 in {F0_FLOOR:g}-{F0_CEIL:g} Hz; "
        "CheapTrick envelope)"
    )

    def __init__(self) -> None:
        self._world = _require("pyworld", "pyworld-prebuilt")

    def analyze(self, audio: np.ndarray) -> WorldFeatures:
        # DIO rather than Harvest: 20x faster here, and its voicing decisions are what we compare
        # between source and output, so any bias cancels.
        audio = _check_audio(audio).astype(np.float64)
        world = self._world
        f0, times = world.dio(audio, EVAL_RATE, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_PERIOD_MS)
        f0 = world.stonemask(audio, f0, times, EVAL_RATE)
        envelope = world.cheaptrick(audio, f0, times, EVAL_RATE)
        return WorldFeatures(f0=np.asarray(f0), envelope=np.asarray(envelope))
