"""The Gradio web demo: a thin layer over :class:`voiceconv.convert.converter.VoiceConverter`.

Start it with ``voiceconv demo`` (or ``python demo/app.py``); both call :func:`launch`. The page
lets a visitor upload or record a source, pick a bundled gallery voice (or a blend of two) or
their own reference clips as the target, and get the converted audio back with mel spectrograms,
speaker similarity, input-check warnings and timing. All model work is
``VoiceConverter.embed_speaker`` / ``.convert`` / ``.check_input``; this module only validates
input, caches speaker embeddings, measures similarity for display, draws figures and wires the UI.

Design choices, each for a reason:

- Gallery voices are embedded once per model and cached for every visitor (kNN-VC's "embed the
  target once, convert many sources" split); a visitor's own clips are kept in their session
  (``gr.State``) for the rest of the visit and never shared.
- The queue runs one conversion at a time by default: the demo targets a 2-core CPU, where two
  parallel conversions are each slower than two in a row.
- Every bad input becomes a ``gr.Error`` with a sentence that says what to do; no traceback
  reaches the page.
- The similarity shown is one a visitor can read: the independent Resemblyzer judge when it is
  installed (with the measured threshold and averages to compare against), else the model's own
  encoder ranked among real pairs (``similarity_calibration.json`` beside the model), else the raw
  own cosine, labelled as uncalibrated. The model's own cosine alone rates nearly every conversion
  0.98-0.99. Similarity is display only: it never changes the conversion, and never fails it.
- Offline by construction: analytics off, no share link unless asked, bundled fonts only, and
  only the gallery folder is added to the paths Gradio may serve.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voiceconv.demo.calibration import FILE_NAME as CALIBRATION_FILE
from voiceconv.demo.calibration import SimilarityCalibration
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

GALLERY_DIR = Path(__file__).parent.parent / "gallery"  # voiceconv/gallery
NEURAL = "neural"
GRIFFIN_LIM = "griffin-lim"
DEFAULT_MODEL_NAME = "default"
QUIET_PEAK_DB = -50.0  # real speech peaks above about -30 dBFS; a clip whose peak is below -50 dBFS is silence
BLEND_NONE = "none"  # the "Blend with" choice that blends nothing

# How the similarity was measured (Similarity.method).
JUDGE = "judge"  # the independent Resemblyzer speaker-verification model
CALIBRATED = "calibrated"  # the VC model's own encoder, ranked among real pairs (similarity_calibration.json)
OWN = "own"  # the VC model's own encoder, raw
# The judge's reference points, from `voiceconv evaluate` on the recipe's 40 pairs among 20 held-out
# LibriSpeech speakers (recipes/mini/splits/eval_pairs.csv; README "Measured results", pitch off).
JUDGE_EER_THRESHOLD = 0.806  # cosine at the equal-error rate of real same/different-speaker trials
JUDGE_EER = 0.017
JUDGE_SHIPPED_MEAN = 0.710  # mean cosine of the shipped model's conversions to their targets
JUDGE_SOURCE_MEAN = 0.570  # mean cosine of the unconverted sources to the same targets


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


def _user_error(message: str):
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
        raise _user_error(f"{what}: no audio yet. Upload a file or record from the microphone.")
    name = Path(path).name
    try:
        header_seconds = sf.info(str(path)).duration
    except Exception:  # unreadable header: load_audio below gives the precise message
        header_seconds = None
    if header_seconds is not None and header_seconds > max_seconds:
        raise _user_error(
            f"{what}: {name} is {header_seconds:.1f} s long; this demo accepts up to {max_seconds:.0f} s. "
            "Trim it or use the 'voiceconv convert' command for long recordings."
        )
    try:
        audio = load_audio(path, sample_rate, min_duration=min_seconds)
    except VoiceconvError as error:
        raise _user_error(f"{what}: {_clean(str(error), path)}") from None
    seconds = audio.size / sample_rate
    if seconds > max_seconds:
        raise _user_error(
            f"{what}: {name} is {seconds:.1f} s long; this demo accepts up to {max_seconds:.0f} s. "
            "Trim it or use the 'voiceconv convert' command for long recordings."
        )
    peak_db = 20 * math.log10(max(float(np.abs(audio).max()), 1e-12))
    if peak_db < QUIET_PEAK_DB:
        raise _user_error(
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


# ---------------------------------------------------------------------------------------------------
# figures


def mel_figure(mels: list[np.ndarray], titles: list[str], sample_rate: int, hop_length: int):
    """One matplotlib figure: a row per log-mel ``(n_mels, T)``, one shared colour scale and colour bar.

    A shared scale makes loudness and spectral tilt comparable across source, reference and result.
    Uses ``matplotlib.figure.Figure`` directly (not pyplot), so figures made in parallel request
    threads share no global state and are freed with the object.
    """
    from matplotlib.figure import Figure

    low = min(float(m.min()) for m in mels)
    high = max(float(m.max()) for m in mels)
    figure = Figure(figsize=(10, 0.4 + 2.0 * len(mels)), layout="constrained")
    figure.suptitle("Log-mel spectrograms (one colour scale for all)", fontsize=11)
    axes = figure.subplots(len(mels), 1, squeeze=False)[:, 0]
    image = None
    for ax, mel, title in zip(axes, mels, titles):
        seconds = mel.shape[1] * hop_length / sample_rate
        image = ax.imshow(mel, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                          extent=(0.0, seconds, 0, mel.shape[0]), interpolation="nearest")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel("mel band")
    axes[-1].set_xlabel("time (s)")
    figure.colorbar(image, ax=list(axes), label="log magnitude (ln)", shrink=0.9)
    return figure


# ---------------------------------------------------------------------------------------------------
# speaker similarity (display only) and input-check warnings


def judge_available() -> bool:
    """Whether the independent speaker judge can be imported (Resemblyzer and webrtcvad: the ``[eval]`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("resemblyzer", "webrtcvad"))


def _similarity(converter, audio: np.ndarray, target) -> float:
    """``VoiceConverter.similarity`` of ``audio`` ``(T,)`` (at the model rate) to ``target``; NaN when the
    clip has too little sound to embed (shown as n/a: a figure of merit must not fail a finished conversion)."""
    try:
        return converter.similarity(audio, target, source_rate=converter.sample_rate)
    except VoiceconvError:
        return math.nan


def _judge_embedding(judge, audio: np.ndarray, rate: int) -> np.ndarray | None:
    """The judge's d-vector ``(256,)`` of ``audio (T,)`` at ``rate`` (resampled to its 16 kHz), or None when
    the clip cannot be embedded. Never raises: the judge only annotates a conversion that already succeeded."""
    from voiceconv.audio import load_audio
    from voiceconv.evaluation.judges import EVAL_RATE

    try:
        return judge.embed(load_audio(audio, EVAL_RATE, source_rate=rate))
    except VoiceconvError:  # silent or too short: shown as n/a
        return None
    except Exception:
        log.warning("demo: the speaker judge could not embed a clip; similarity shown as n/a", exc_info=True)
        return None


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Cosine of two ``(D,)`` vectors; NaN when either is missing or zero."""
    from voiceconv.evaluation.metrics import cosine_similarity

    if a is None or b is None:
        return math.nan
    try:
        return cosine_similarity(a, b)
    except ValueError:
        return math.nan


def _check_warning(converter, audio: np.ndarray) -> str | None:
    """The input check's warning for ``audio (T,)`` at the model rate as a phrase after "the source ...",
    or None. Advisory: a failing check is logged, never shown as an error (the conversion succeeded)."""
    try:
        report = converter.check_input((converter.sample_rate, audio))
    except Exception:
        log.warning("demo: the input check failed on a clip; no warning shown", exc_info=True)
        return None
    if report is None or not report.warning:
        return None
    warning = report.warning
    # The sentences read "it sounds unlike ..."; the page names the clip instead of "it".
    return warning[3:] if warning.startswith("it ") else f"may be a problem: {warning}"


@dataclass
class Similarity:
    """Speaker similarity of the result and of the source to each target voice, for display only."""

    method: str  # JUDGE, CALIBRATED or OWN
    voices: list[str]  # what each cosine is measured against: the target, or each voice of a blend
    result: list[float]  # cosine(result, voice) per voice; NaN = not measurable (shown as n/a)
    source: list[float]  # cosine(source, voice): the starting point the result should beat
    calibration: SimilarityCalibration | None = None  # with CALIBRATED: own cosines of real pairs


@dataclass
class TargetVoice:
    """One voice of a target as the backend uses it."""

    name: str
    speaker: Any  # voiceconv.convert.speaker.Speaker for the model in use
    references: list[np.ndarray]  # the reference clips, (T,) float32 at the model rate
    notes: dict  # per-voice cache that outlives the request (gallery: the backend's; own clips: the session's)


def _model_directory(path: Path | None) -> Path:
    """The VC model directory ``VoiceConverter.from_pretrained(path)`` loads: a bundle's ``vc/``; None: the shipped."""
    from voiceconv.pretrained import default_vc_dir

    if path is None:
        return default_vc_dir()
    if not (path / "config.json").is_file() and (path / "vc" / "config.json").is_file():
        return path / "vc"
    return path


def _load_calibration(path: Path | None) -> SimilarityCalibration | None:
    """The model's similarity calibration; None when there is none or it is unusable (logged: a display
    aid must not keep the demo from starting)."""
    from voiceconv.checkpoint import read_config

    directory = _model_directory(path)
    try:
        calibration = SimilarityCalibration.load(directory)
    except VoiceconvError as error:
        log.warning("demo: %s; similarity is shown uncalibrated", error)
        return None
    if calibration is not None and calibration.model_file_sha256:
        weights = read_config(directory).get("sha256", "")
        if weights and weights != calibration.model_file_sha256:
            log.warning("demo: %s/%s was made for other weights than the model's; ignored (re-run "
                        "recipes/mini/local/calibrate_similarity.py)", directory, CALIBRATION_FILE)
            return None
    return calibration


# ---------------------------------------------------------------------------------------------------
# backend: converters, caching, one conversion


@dataclass
class ConversionResult:
    audio: np.ndarray  # (T,) float32 at sample_rate
    sample_rate: int
    figure: Any  # matplotlib Figure
    similarity: Similarity
    seconds_convert: float  # VoiceConverter.convert wall time (content, decoder and vocoder)
    seconds_total: float  # the whole request, including decoding, similarity and the figure
    source_seconds: float
    neural_vocoder: bool
    vocoder_fallback: bool  # Griffin-Lim made the audio because no neural vocoder is installed
    model: str
    target: str
    warnings: list[str] = field(default_factory=list)  # input-check phrases, e.g. "the source sounds unlike ..."


class DemoBackend:
    """Loaded converters, the gallery and the speaker cache, shared by every visitor.

    ``converters[model][vocoder]`` is a :class:`VoiceConverter`; ``vocoder`` is ``"neural"`` (when
    one is installed) and ``"griffin-lim"`` (always). Griffin-Lim is offered beside a neural vocoder
    as a comparison; when no neural vocoder is installed it is the fallback, and results say so.
    ``calibrations[model]`` is the model's :class:`SimilarityCalibration` or None; the independent
    speaker judge is loaded on the first conversion (:meth:`speaker_judge`).
    """

    def __init__(self, config: DemoConfig, gallery_dir: str | Path = GALLERY_DIR):
        self.config = config
        self.gallery = load_gallery(gallery_dir)
        self.gallery_dir = Path(gallery_dir)
        self.cache = SpeakerCache()
        self.converters: dict[str, dict[str, Any]] = {}
        self.fallback_models: set[str] = set()  # models whose audio comes from the Griffin-Lim fallback
        self.calibrations: dict[str, SimilarityCalibration | None] = {}
        self._mels: dict[str, Any] = {}
        self._gallery_notes: dict[str, dict] = {}  # voice id -> notes (the judge's embedding of its clip)
        self._judge: Any = None  # None: not tried yet; False: not installed or failed to load
        self._judge_lock = threading.Lock()
        self._load()

    # -- loading -----------------------------------------------------------------------------------

    def _model_names(self) -> list[tuple[str, Path | None]]:
        if not self.config.models:
            return [(DEFAULT_MODEL_NAME, None)]
        named: list[tuple[str, Path | None]] = []
        for directory in self.config.models:
            path = Path(directory).expanduser().resolve()
            name = path.name
            if any(existing == name for existing, _ in named):
                name = f"{path.parent.name}/{path.name}"  # two runs' "best" dirs stay distinguishable
            named.append((name, path))
        return named

    def _load(self) -> None:
        from voiceconv.convert.converter import VoiceConverter
        from voiceconv.features import MelSpectrogram
        from voiceconv.vocoder.model import Vocoder

        for name, path in self._model_names():
            # from_pretrained finds the vocoder (explicit, beside the model, or shipped) and falls back to
            # Griffin-Lim itself when there is none; the demo only reports which one it got.
            base = VoiceConverter.from_pretrained(path, vocoder=self.config.vocoder, device=self.config.device)
            variants = {}
            if base.vocoder.is_neural:
                variants[NEURAL] = base
                # Same model object, second vocoder: Griffin-Lim as a comparison costs no extra weights.
                griffin = Vocoder.griffin_lim(base.mel_config, device=base.device)
                variants[GRIFFIN_LIM] = VoiceConverter(base.model, griffin, device=base.device)
            else:
                variants[GRIFFIN_LIM] = base
                if self.config.vocoder is None:
                    self.fallback_models.add(name)
            self.converters[name] = variants
            self.calibrations[name] = _load_calibration(path)
            self._mels[name] = MelSpectrogram(base.mel_config).eval()
            log.info("demo model %r loaded (vocoders: %s)", name, ", ".join(variants))
        if self.fallback_models:
            log.warning("no neural vocoder is installed; the demo uses Griffin-Lim (robotic quality) and says so")

    def speaker_judge(self):
        """The independent speaker judge (Resemblyzer), loaded once on first use; None when it is not
        installed or fails to load (the page then falls back to the model's own encoder)."""
        with self._judge_lock:
            if self._judge is None:
                self._judge = False
                if judge_available():
                    try:
                        from voiceconv.evaluation.judges import SpeakerJudge

                        self._judge = SpeakerJudge()
                    except Exception:
                        log.warning("demo: the Resemblyzer speaker judge failed to load; similarity is measured "
                                    "with the model's own encoder", exc_info=True)
            return self._judge or None

    @property
    def model_names(self) -> list[str]:
        return list(self.converters)

    @property
    def vocoder_names(self) -> list[str]:
        """Every vocoder some model offers, neural first."""
        names = {name for variants in self.converters.values() for name in variants}
        return [name for name in (NEURAL, GRIFFIN_LIM) if name in names]

    def converter(self, model: str | None, vocoder: str | None):
        model = model or self.model_names[0]
        if model not in self.converters:
            raise _user_error(f"Unknown model {model!r}; choose one of {', '.join(self.model_names)}.")
        variants = self.converters[model]
        vocoder = vocoder or next(iter(variants))
        if vocoder not in variants:
            raise _user_error(f"Vocoder {vocoder!r} is not installed; choose one of {', '.join(variants)}.")
        return variants[vocoder]

    # -- speakers ----------------------------------------------------------------------------------

    def gallery_voice(self, voice_id: str | None) -> GalleryVoice:
        for voice in self.gallery:
            if voice.id == voice_id:
                return voice
        raise _user_error("Choose a gallery voice, or switch the target to your own reference clips.")

    def gallery_speaker(self, model: str, voice: GalleryVoice):
        converter = self.converter(model, None)
        return self.cache.get((model, voice.id), lambda: converter.embed_speaker(str(voice.path)))

    def custom_voice(self, paths: list[str]) -> dict:
        """A visitor's reference clips -> the session's custom-voice dict (decoded clips + embeddings per model).

        The clips are decoded once, at the first model's rate, and embedded for that model right away,
        so a clip the speaker encoder cannot use is reported when it is added, not at conversion time.
        """
        model = self.model_names[0]
        converter = self.converter(model, None)
        rate = converter.sample_rate
        clips, total = [], 0.0
        for path in paths:
            audio = load_clip(path, rate, f"Reference clip {Path(path).name}", self.config.min_seconds,
                              self.config.max_reference_seconds)
            clips.append((rate, audio))
            total += audio.size / rate
        if total > self.config.max_reference_seconds:
            raise _user_error(
                f"Reference clips: {total:.0f} s in all; this demo takes up to "
                f"{self.config.max_reference_seconds:.0f} s. "
                "A few sentences (10-30 s) are enough."
            )
        voice = {"clips": clips, "seconds": total, "embeddings": {},
                 "name": f"your voice ({len(clips)} clip{'s' if len(clips) > 1 else ''})"}
        self.custom_speaker(model, voice)
        return voice

    def custom_speaker(self, model: str, voice: dict):
        """The session voice's speaker for ``model``, embedded on first use and kept in the session dict."""
        if model not in voice["embeddings"]:
            try:
                voice["embeddings"][model] = self.converter(model, None).embed_speaker(list(voice["clips"]))
            except VoiceconvError as error:
                raise _user_error(f"Reference clips: {error}") from None
        return voice["embeddings"][model]

    def target_voice(self, model: str, target: GalleryVoice | dict) -> TargetVoice:
        """A gallery voice or a session's custom-voice dict, as the speaker, clips and notes for ``model``."""
        from voiceconv.audio import load_audio

        rate = self.converter(model, None).sample_rate
        if isinstance(target, GalleryVoice):
            reference = load_clip(str(target.path), rate, "Gallery voice", 0.0, math.inf)
            return TargetVoice(target.label, self.gallery_speaker(model, target), [reference],
                               self._gallery_notes.setdefault(target.id, {}))
        clips = [clip if clip_rate == rate else load_audio(clip, rate, source_rate=clip_rate)
                 for clip_rate, clip in target["clips"]]
        return TargetVoice(target["name"], self.custom_speaker(model, target), clips, target.setdefault("notes", {}))

    def blended(self, model: str, target: GalleryVoice | dict,
                blend: tuple[GalleryVoice | dict, float] | None) -> tuple[list[TargetVoice], list[float], Any, str]:
        """The voices of the target, their weights, the speaker to convert to and its name.

        ``blend``: ``(second voice, its weight 0-1)`` or None. Weight 0, or the same voice twice, is no
        blend; weight 1 is the second voice alone.
        """
        from voiceconv.convert.speaker import Speaker

        first = self.target_voice(model, target)
        if blend is None or blend[0] is target or blend[1] == 0:
            return [first], [1.0], first.speaker, first.name
        other, weight = blend
        if not 0.0 <= weight <= 1.0:
            raise _user_error(f"Blend weight: {weight:g} is outside 0-1 (the share of the second voice).")
        second = self.target_voice(model, other)
        if weight == 1:
            return [second], [1.0], second.speaker, second.name
        name = f"a blend of {100 * (1 - weight):.0f} % {first.name} and {100 * weight:.0f} % {second.name}"
        try:
            speaker = Speaker.blend([(first.speaker, 1.0 - weight), (second.speaker, weight)], name=name)
        except VoiceconvError as error:
            raise _user_error(f"Blend: {error}") from None
        return [first, second], [1.0 - weight, weight], speaker, name

    def judge_reference(self, judge, voice: TargetVoice, rate: int) -> np.ndarray | None:
        """The judge's unit-mean d-vector ``(256,)`` of ``voice``'s clips, kept in its notes; None if none embeds."""
        from voiceconv.evaluation.metrics import mean_embedding

        if "judge" not in voice.notes:
            embeddings = [_judge_embedding(judge, clip, rate) for clip in voice.references]
            embeddings = [embedding for embedding in embeddings if embedding is not None]
            voice.notes["judge"] = mean_embedding(embeddings) if embeddings else None
        return voice.notes["judge"]

    def measure_similarity(self, model: str, converter, result: np.ndarray, source: np.ndarray,
                           voices: list[TargetVoice], labels: list[str]) -> Similarity:
        """Similarity of ``result`` and ``source`` ``(T,)`` (model rate) to each voice: by the independent judge
        when it is installed, else by the model's own encoder (ranked among real pairs when calibrated)."""
        judge = self.speaker_judge()
        if judge is not None:
            rate = converter.sample_rate
            targets = [self.judge_reference(judge, voice, rate) for voice in voices]
            result_vector, source_vector = (_judge_embedding(judge, audio, rate) for audio in (result, source))
            return Similarity(JUDGE, labels, [_cosine(result_vector, t) for t in targets],
                              [_cosine(source_vector, t) for t in targets])
        calibration = self.calibrations.get(model)
        return Similarity(CALIBRATED if calibration is not None else OWN, labels,
                          [_similarity(converter, result, voice.speaker) for voice in voices],
                          [_similarity(converter, source, voice.speaker) for voice in voices], calibration)

    def input_warnings(self, converter, source: np.ndarray, voices: list[TargetVoice]) -> list[str]:
        """The input check's phrases for the source and every reference clip (``VoiceConverter.check_input``)."""
        warnings = []
        problem = _check_warning(converter, source)
        if problem:
            warnings.append(f"the source {problem}")
        for voice in voices:
            for number, clip in enumerate(voice.references, 1):
                problem = _check_warning(converter, clip)
                if problem:
                    which = f"reference clip {number}" if len(voice.references) > 1 else "reference clip"
                    warnings.append(f"the {which} of {voice.name} {problem}")
        return warnings

    # -- conversion --------------------------------------------------------------------------------

    def convert(
        self,
        source_path: str | None,
        target: GalleryVoice | dict,
        pitch: str | float | None = None,
        model: str | None = None,
        vocoder: str | None = None,
        progress: Callable[[float, str], None] | None = None,
        blend: tuple[GalleryVoice | dict, float] | None = None,
    ) -> ConversionResult:
        """Convert one uploaded source to ``target`` (a gallery voice or a session's custom-voice dict),
        or to a blend of it with ``blend = (second voice, weight of the second, 0-1)``."""
        import torch

        def report(fraction: float, text: str) -> None:
            if progress is not None:
                progress(fraction, text)

        started = time.perf_counter()
        model = model or self.model_names[0]
        converter = self.converter(model, vocoder)
        rate = converter.sample_rate
        report(0.05, "Reading the source")
        source = load_clip(source_path, rate, "Source", self.config.min_seconds, self.config.max_seconds)

        report(0.15, "Encoding the target voice")
        voices, weights, speaker, target_name = self.blended(model, target, blend)

        report(0.3, "Converting")
        converted_at = time.perf_counter()
        try:
            wav = converter.convert((rate, source), speaker, pitch=pitch)
        except VoiceconvError as error:
            raise _user_error(f"Conversion: {error}") from None
        seconds_convert = time.perf_counter() - converted_at
        wav = wav.detach().cpu().float().numpy().reshape(-1)

        report(0.75, "Measuring speaker similarity")
        labels = [voice.name if len(voices) == 1 else f"{voice.name} ({100 * weight:.0f} %)"
                  for voice, weight in zip(voices, weights)]
        similarity = self.measure_similarity(model, converter, wav, source, voices, labels)
        report(0.85, "Checking the input")
        warnings = self.input_warnings(converter, source, voices)

        report(0.9, "Drawing spectrograms")
        mel = self._mels[model]
        with torch.inference_mode():
            mels = [mel(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()  # (n_mels, T)
                    for x in (source, *(voice.references[0] for voice in voices), wav)]
        titles = ["source", *(f"target reference: {label}" for label in labels), "result"]
        figure = mel_figure(mels, titles, rate, converter.model.mel_config.hop_length)
        return ConversionResult(
            audio=wav, sample_rate=rate, figure=figure, similarity=similarity,
            seconds_convert=seconds_convert, seconds_total=time.perf_counter() - started,
            source_seconds=source.size / rate, neural_vocoder=bool(converter.vocoder.is_neural),
            vocoder_fallback=model in self.fallback_models and not converter.vocoder.is_neural,
            model=model, target=target_name, warnings=warnings,
        )


JUDGE_NOTE = (
    "Speaker similarity by an independent speaker-verification model (Resemblyzer), not the converter's own "
    f"encoder. On held-out LibriSpeech speakers, recordings of the same speaker score {JUDGE_EER_THRESHOLD:.2f} or "
    f"more at the equal-error-rate threshold (EER {100 * JUDGE_EER:.1f} %: that share of same-speaker pairs scores "
    f"below it, and of different-speaker pairs above); the shipped model's conversions average "
    f"{JUDGE_SHIPPED_MEAN:.2f} and unconverted sources {JUDGE_SOURCE_MEAN:.2f}."
)
OWN_NOTE = (
    "Uncalibrated: measured with the converter's own speaker encoder, which rates nearly every conversion of the "
    "shipped model 0.98-0.99, so the number says little on its own and is not comparable across models. Higher "
    "than the source's only means the conversion moved toward the target. Install the independent judge "
    "(Resemblyzer, with the [eval] extra) for a similarity you can compare."
)


def _cosine_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _calibrated_note(similarity: Similarity) -> str:
    """How to read calibrated own-encoder cosines: where the result (and the source) rank among real pairs."""
    calibration = similarity.calibration
    speakers = calibration.data.get("speakers")
    where = f"real pairs of {speakers} training speakers' recordings" if speakers else "real pairs of recordings"
    if len(similarity.voices) == 1:
        ranks = (f"the result is {calibration.describe(similarity.result[0])}; the source, before conversion, "
                 f"was {calibration.describe(similarity.source[0])}")
    else:
        ranks = "; ".join(f"the result is {calibration.describe(cosine, voice)}"
                          for voice, cosine in zip(similarity.voices, similarity.result))
    return ("Measured with the converter's own speaker encoder, whose cosine is high for almost any two voices, so "
            f"it is ranked among the same encoder's cosines for {where}: {ranks}. Trained together with the "
            "converter, this encoder may favour its conversions; an independent judge (Resemblyzer, with the [eval] "
            "extra) would not.")


def similarity_markdown(similarity: Similarity) -> list[str]:
    """The similarity table (a column per voice; with a calibration, a rank column too) and how to read it."""
    name = {JUDGE: "Resemblyzer cosine", CALIBRATED: "own-encoder cosine",
            OWN: "own-encoder cosine (uncalibrated)"}[similarity.method]
    blend = len(similarity.voices) > 1
    columns: list[tuple[str, Callable[[list[float]], str]]] = []
    for k, voice in enumerate(similarity.voices):
        # A blend gets a column per voice, named after it; the measure moves to the first header.
        columns.append((f"to {voice}" if blend else name, lambda values, k=k: _cosine_text(values[k])))
        if similarity.method == CALIBRATED:
            def rank(values, k=k):
                share = similarity.calibration.share_below(values[k])[0]
                return "n/a" if math.isnan(share) else f"{100 * share:.0f} %"
            columns.append(("closer than real same-speaker pairs", rank))
    note = {JUDGE: JUDGE_NOTE, OWN: OWN_NOTE}.get(similarity.method) or _calibrated_note(similarity)
    first = f"speaker similarity to the target ({name})" if blend else "speaker similarity to the target"
    return [
        f"| {first} | " + " | ".join(header for header, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        "| **result** | " + " | ".join(f"**{cell(similarity.result)}**" for _, cell in columns) + " |",
        "| source (before conversion) | " + " | ".join(cell(similarity.source) for _, cell in columns) + " |",
        "",
        f"<small>{note} Display only: it does not change the conversion.</small>",
    ]


def result_markdown(result: ConversionResult) -> str:
    """The text beside the result: input warnings first, the target, similarity, timing and the vocoder."""
    rtf = result.seconds_convert / max(result.source_seconds, 1e-9)
    lines = []
    for warning in result.warnings:  # first, so a poor result is explained before it is measured
        lines += [f"**Warning:** {warning}.", ""]
    lines += [f"Target: **{result.target}**.", "", *similarity_markdown(result.similarity), "",
              f"Processing time: **{result.seconds_convert:.2f} s** to convert {result.source_seconds:.1f} s of "
              f"audio (real-time factor {rtf:.2f}); {result.seconds_total:.2f} s for the whole request. "
              f"Model: {result.model}."]
    if result.vocoder_fallback:
        lines += ["", "**Note: made with the Griffin-Lim fallback vocoder** because no neural vocoder is installed: "
                  "expect a robotic, phasey sound. Install or train a neural vocoder for natural audio."]
    elif not result.neural_vocoder:
        lines += ["", "Made with the **Griffin-Lim** vocoder (chosen above), not the neural one."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# the Blocks app


def _guarded(handler):
    """Wrap an event handler: visitor errors pass through as ``gr.Error``; anything else is a bug,
    logged with its traceback on the server and shown on the page as one sentence."""
    import functools

    import gradio as gr

    @functools.wraps(handler)  # keeps the signature, so Gradio still sees the gr.Progress parameter
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except VoiceconvError as error:
            raise _user_error(str(error)) from None
        except Exception:
            log.exception("demo: %s failed", handler.__name__)
            raise gr.Error("Something went wrong on the server (the details are in its log). Try another clip; "
                           "if it keeps happening, please report it.", print_exception=False) from None

    return wrapper


def _release_memory() -> None:
    """Give freed heap memory back to the OS after a conversion (glibc only; a no-op elsewhere).

    Measured with benchmarks/demo_load.py: without this, glibc keeps the freed buffers of each
    conversion in per-thread arenas and the server's RSS creeps up by a few MB per request; with it,
    RSS stays flat. The Python objects themselves are freed either way (tracemalloc shows no growth).
    """
    import ctypes
    import ctypes.util

    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None  # glibc's malloc_trim, looked up on first use (False where there is none)


def _to_int16(audio: np.ndarray) -> np.ndarray:
    """Float ``(T,)`` -> int16 PCM, so Gradio writes the WAV as is instead of warning and converting."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def build_app(backend: DemoBackend):
    """The Blocks page over ``backend``. Returns the un-launched ``gr.Blocks``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    config = backend.config
    gallery_choices = [(voice.label, voice.id) for voice in backend.gallery]
    first_voice = backend.gallery[0]
    vocoder_labels = {NEURAL: "Neural vocoder (default)", GRIFFIN_LIM: "Griffin-Lim (no weights; robotic)"}

    def attribution_text(voice: GalleryVoice) -> str:
        return f"<small>Source: {voice.attribution}. License: {voice.license}.</small>"

    @_guarded
    def on_gallery_change(voice_id):
        voice = backend.gallery_voice(voice_id)
        return str(voice.path), attribution_text(voice)

    @_guarded
    def on_source_change(path):
        return describe_audio(path)

    @_guarded
    def on_set_reference(files, recording, state):
        paths = [str(getattr(f, "name", f)) for f in (files or [])]
        if recording:
            paths.append(str(recording))
        if not paths:
            raise _user_error("Add one or more reference clips (upload or record) before using them as the target.")
        state = backend.custom_voice(paths)
        names = ", ".join(Path(p).name for p in paths)
        status = (f"Your target voice is set from {len(paths)} clip(s), {state['seconds']:.1f} s ({names}). "
                  "It is kept for the rest of this visit.")
        return state, status, "custom"

    @_guarded
    def on_clear_reference():
        return None, "No custom voice set.", "gallery"

    # The blend inputs come last, after the session state, so the API keeps the positions it had
    # before blending existed (source, target_mode, voice, pitch, semitones, vocoder, model) and a
    # caller that leaves them out gets their defaults: no blend.
    @_guarded
    def on_convert(source, target_mode, voice_id, pitch_mode, semitones, vocoder, model, custom,
                   blend_id=BLEND_NONE, blend_weight=0.5, progress=gr.Progress()):
        blend = None
        if target_mode == "custom":
            if not custom:
                raise _user_error("No custom voice yet: add reference clips and press 'Use as my target voice', "
                                  "or pick a gallery voice.")
            target = custom
        else:
            target = backend.gallery_voice(voice_id)
            if blend_id not in (None, "", BLEND_NONE):  # blending is offered in the Gallery tab only
                weight = 0.5 if blend_weight is None else float(blend_weight)
                blend = (backend.gallery_voice(blend_id), weight)
        pitch = {"auto": "auto", "off": None}.get(pitch_mode, None if pitch_mode is None else float(semitones or 0))
        try:
            result = backend.convert(source, target, pitch=pitch, model=model, vocoder=vocoder,
                                     progress=lambda fraction, text: progress(fraction, desc=text), blend=blend)
            return (result.sample_rate, _to_int16(result.audio)), result_markdown(result), result.figure, custom
        finally:
            _release_memory()

    with gr.Blocks(title="voiceconv: one-shot voice conversion", analytics_enabled=False,
                   delete_cache=config.delete_cache) as demo:
        gr.Markdown(
            "# voiceconv: one-shot voice conversion\n"
            "Make a recording sound like another speaker from a few seconds of their voice. "
            "Upload or record a **source**, choose a **target voice**, and press **Convert**. "
            f"Clips: {config.min_seconds:g}-{config.max_seconds:g} s, up to "
            f"{config.max_file_size / 1e6:.3g} MB; WAV, FLAC, OGG or MP3."
        )
        custom_state = gr.State(None, time_to_live=config.custom_voice_ttl)
        with gr.Row():
            with gr.Column():
                gr.Markdown("### 1. Source")
                source = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Source recording",
                                  buttons=["download"], elem_id="source_audio")
                source_info = gr.Markdown("", elem_id="source_info")
            with gr.Column():
                gr.Markdown("### 2. Target voice")
                target_mode = gr.Radio([("A gallery voice", "gallery"), ("My reference clips", "custom")],
                                       value="gallery", label="Convert to", elem_id="target_mode")
                with gr.Tabs(selected="gallery") as target_tabs:
                    with gr.Tab("Gallery", id="gallery") as gallery_tab:
                        voice_id = gr.Radio(gallery_choices, value=first_voice.id, label="Gallery voices",
                                            elem_id="gallery_voice")
                        with gr.Row():
                            blend_id = gr.Dropdown([("None", BLEND_NONE), *gallery_choices], value=BLEND_NONE,
                                                   label="Blend with", info="a second gallery voice to mix in",
                                                   elem_id="blend_voice")
                            blend_weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Blend weight",
                                                     info="share of the second voice (0: the first only)",
                                                     elem_id="blend_weight")
                        preview = gr.Audio(value=str(first_voice.path), label="Listen", interactive=False,
                                           buttons=["download"], elem_id="gallery_preview")
                        attribution = gr.Markdown(attribution_text(first_voice), elem_id="gallery_attribution")
                    with gr.Tab("My reference clips", id="custom") as custom_tab:
                        reference_files = gr.File(file_count="multiple", file_types=["audio"],
                                                  label="Upload one or more clips of the target speaker",
                                                  elem_id="reference_files")
                        reference_mic = gr.Audio(sources=["microphone"], type="filepath", label="…or record one",
                                                 buttons=["download"], elem_id="reference_mic")
                        with gr.Row():
                            use_reference = gr.Button("Use as my target voice", elem_id="use_reference")
                            clear_reference = gr.Button("Forget my voice", elem_id="clear_reference")
                        reference_status = gr.Markdown("No custom voice set.", elem_id="reference_status")
        with gr.Row():
            pitch_mode = gr.Radio([("Auto (move to the target's range)", "auto"), ("Shift by semitones", "semitones"),
                                   ("Off (keep the source pitch)", "off")], value="off", label="Pitch",
                                  elem_id="pitch_mode")
            semitones = gr.Slider(-12, 12, value=0, step=1, label="Semitones (when shifting)", elem_id="semitones")
            vocoder = gr.Radio([(vocoder_labels[v], v) for v in backend.vocoder_names],
                               value=backend.vocoder_names[0], label="Vocoder", elem_id="vocoder",
                               visible=len(backend.vocoder_names) > 1)
            model = gr.Dropdown(backend.model_names, value=backend.model_names[0], label="Model",
                                elem_id="model", visible=len(backend.model_names) > 1)
        convert = gr.Button("Convert", variant="primary", elem_id="convert")
        gr.Markdown("### 3. Result")
        with gr.Row():
            result_audio = gr.Audio(type="numpy", format="wav", label="Converted audio", interactive=False,
                                    buttons=["download"], elem_id="result_audio")
            result_info = gr.Markdown("", elem_id="result_info")
        plot = gr.Plot(label="Log-mel spectrograms", show_label=False, elem_id="mel_plot")
        if backend.fallback_models:
            gr.Markdown("**Note:** no neural vocoder is installed, so results are made with the "
                        "**Griffin-Lim fallback** (robotic quality).", elem_id="fallback_note")
        with gr.Accordion("About the gallery voices", open=False):
            gr.Markdown((backend.gallery_dir / "ATTRIBUTION.md").read_text()
                        if (backend.gallery_dir / "ATTRIBUTION.md").is_file() else "")

        # The tabs and the "Convert to" choice follow each other, so what is on screen is what is used.
        gallery_tab.select(lambda: "gallery", None, target_mode, api_visibility="private", queue=False)
        custom_tab.select(lambda: "custom", None, target_mode, api_visibility="private", queue=False)
        target_mode.change(lambda mode: gr.Tabs(selected=mode), target_mode, target_tabs, api_visibility="private",
                           queue=False)
        voice_id.change(on_gallery_change, voice_id, [preview, attribution], api_visibility="private", queue=False,
                        show_progress="hidden")
        source.change(on_source_change, source, source_info, api_visibility="private", queue=False,
                      show_progress="hidden")
        use_reference.click(on_set_reference, [reference_files, reference_mic, custom_state],
                            [custom_state, reference_status, target_mode], api_name="set_reference",
                            concurrency_id="model")
        clear_reference.click(on_clear_reference, None, [custom_state, reference_status, target_mode],
                              api_name="clear_reference", queue=False)
        convert.click(on_convert, [source, target_mode, voice_id, pitch_mode, semitones, vocoder, model, custom_state,
                                   blend_id, blend_weight],
                      [result_audio, result_info, plot, custom_state], api_name="convert", concurrency_id="model")
    demo.queue(default_concurrency_limit=config.concurrency_limit, max_size=config.queue_size)
    return demo


def launch(
    config: DemoConfig,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
):
    """Load the models, build the page and serve it. With ``block=False`` returns ``(demo, backend, url)``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    backend = DemoBackend(config)
    demo = build_app(backend)
    # Only the gallery folder joins Gradio's own temp area among the paths the server may send; SSR
    # would need Node, and the MCP endpoint is not wanted on a demo.
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
        max_file_size=config.max_file_size, allowed_paths=[str(backend.gallery_dir)], show_error=False,
        ssr_mode=False, mcp_server=False, quiet=quiet, state_session_capacity=config.session_capacity,
        # Run history could offer to save runs to a Hugging Face bucket; the page must not reach out.
        run_history=False, footer_links=["api", "settings"],
    )
    return demo, backend, url
