"""The demo's backend: loaded converters, the gallery's cached speakers and one conversion request.
All model work is ``VoiceConverter.embed_speaker`` / ``.convert`` / ``.check_input``."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voiceconv.demo.calibration import SimilarityCalibration
from voiceconv.demo.config import DEFAULT_MODEL_NAME, GALLERY_DIR, GRIFFIN_LIM, NEURAL, DemoConfig
from voiceconv.demo.figures import mel_figure
from voiceconv.demo.inputs import GalleryVoice, SpeakerCache, load_clip, load_gallery, user_error
from voiceconv.demo.similarity import (
    CALIBRATED,
    JUDGE,
    OWN,
    Similarity,
    cosine,
    judge_available,
    judge_embedding,
    load_calibration,
    own_similarity,
)
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# a target's voices and their input-check warnings


@dataclass
class TargetVoice:
    """One voice of a target as the backend uses it."""

    name: str
    speaker: Any  # voiceconv.convert.speaker.Speaker for the model in use
    references: list[np.ndarray]  # the reference clips, (T,) float32 at the model rate
    notes: dict  # per-voice cache that outlives the request (gallery: the backend's; own clips: the session's)


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
            self.calibrations[name] = load_calibration(path)
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
            raise user_error(f"Unknown model {model!r}; choose one of {', '.join(self.model_names)}.")
        variants = self.converters[model]
        vocoder = vocoder or next(iter(variants))
        if vocoder not in variants:
            raise user_error(f"Vocoder {vocoder!r} is not installed; choose one of {', '.join(variants)}.")
        return variants[vocoder]

    # -- speakers ----------------------------------------------------------------------------------

    def gallery_voice(self, voice_id: str | None) -> GalleryVoice:
        for voice in self.gallery:
            if voice.id == voice_id:
                return voice
        raise user_error("Choose a gallery voice, or switch the target to your own reference clips.")

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
            raise user_error(
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
                raise user_error(f"Reference clips: {error}") from None
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
            raise user_error(f"Blend weight: {weight:g} is outside 0-1 (the share of the second voice).")
        second = self.target_voice(model, other)
        if weight == 1:
            return [second], [1.0], second.speaker, second.name
        name = f"a blend of {100 * (1 - weight):.0f} % {first.name} and {100 * weight:.0f} % {second.name}"
        try:
            speaker = Speaker.blend([(first.speaker, 1.0 - weight), (second.speaker, weight)], name=name)
        except VoiceconvError as error:
            raise user_error(f"Blend: {error}") from None
        return [first, second], [1.0 - weight, weight], speaker, name

    def judge_reference(self, judge, voice: TargetVoice, rate: int) -> np.ndarray | None:
        """The judge's unit-mean d-vector ``(256,)`` of ``voice``'s clips, kept in its notes; None if none embeds."""
        from voiceconv.evaluation.metrics import mean_embedding

        if "judge" not in voice.notes:
            embeddings = [judge_embedding(judge, clip, rate) for clip in voice.references]
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
            result_vector, source_vector = (judge_embedding(judge, audio, rate) for audio in (result, source))
            return Similarity(JUDGE, labels, [cosine(result_vector, t) for t in targets],
                              [cosine(source_vector, t) for t in targets])
        calibration = self.calibrations.get(model)
        return Similarity(CALIBRATED if calibration is not None else OWN, labels,
                          [own_similarity(converter, result, voice.speaker, calibration) for voice in voices],
                          [own_similarity(converter, source, voice.speaker, calibration) for voice in voices],
                          calibration)

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
            raise user_error(f"Conversion: {error}") from None
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
