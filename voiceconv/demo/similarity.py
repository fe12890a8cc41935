"""Speaker similarity for display only: the independent judge when installed, else the model's own
encoder ranked among real pairs (:mod:`voiceconv.demo.calibration`), else the raw own cosine, labelled.
It never changes a conversion and never fails one."""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voiceconv.demo.calibration import FILE_NAME as CALIBRATION_FILE
from voiceconv.demo.calibration import SimilarityCalibration
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

# How the similarity was measured (Similarity.method).
JUDGE = "judge"  # the independent Resemblyzer speaker-verification model
CALIBRATED = "calibrated"  # the VC model's own encoder, ranked among real pairs (similarity_calibration.json)
OWN = "own"  # the VC model's own encoder, raw
# The judge's reference points, from `voiceconv evaluate` on the recipe's 40 pairs among 20 held-out
# LibriSpeech speakers (recipes/mini/splits/eval_pairs.csv; README "Measured results", pitch off).
JUDGE_EER_THRESHOLD = 0.806  # cosine at the equal-error rate of real same/different-speaker trials
JUDGE_EER = 0.017
# Mean cosine of the shipped default's conversions to their targets (round 18, 10-step speaker fitting).
JUDGE_SHIPPED_MEAN = 0.775
JUDGE_SOURCE_MEAN = 0.570  # mean cosine of the unconverted sources to the same targets


# ---------------------------------------------------------------------------------------------------
# speaker similarity (display only)


def judge_available() -> bool:
    """Whether the independent speaker judge can be imported (Resemblyzer and webrtcvad: the ``[eval]`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("resemblyzer", "webrtcvad"))


def own_similarity(converter, audio: np.ndarray, target, calibration: SimilarityCalibration | None = None) -> float:
    """``VoiceConverter.similarity`` of ``audio`` ``(T,)`` (at the model rate) to ``target``; NaN when the
    clip has too little sound to embed (shown as n/a: a figure of merit must not fail a finished conversion).

    With a ``calibration`` that has a centre, the cosine is centred on it (the score its quantiles are
    of, :meth:`SimilarityCalibration.score`); both sides are in the encoder's space, as in ``similarity``."""
    try:
        if calibration is None or calibration.center is None:
            return converter.similarity(audio, target, source_rate=converter.sample_rate)
        vector = converter.embed_speaker((converter.sample_rate, audio), adapt_steps=0).embedding
        return calibration.score(vector, converter.load_speaker(target).comparison_embedding)
    except VoiceconvError:
        return math.nan


def judge_embedding(judge, audio: np.ndarray, rate: int) -> np.ndarray | None:
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


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Cosine of two ``(D,)`` vectors; NaN when either is missing or zero."""
    from voiceconv.evaluation.metrics import cosine_similarity

    if a is None or b is None:
        return math.nan
    try:
        return cosine_similarity(a, b)
    except ValueError:
        return math.nan


@dataclass
class Similarity:
    """Speaker similarity of the result and of the source to each target voice, for display only."""

    method: str  # JUDGE, CALIBRATED or OWN
    voices: list[str]  # what each cosine is measured against: the target, or each voice of a blend
    result: list[float]  # cosine(result, voice) per voice; NaN = not measurable (shown as n/a)
    source: list[float]  # cosine(source, voice): the starting point the result should beat
    calibration: SimilarityCalibration | None = None  # with CALIBRATED: own cosines of real pairs


def _model_directory(path: Path | None) -> Path:
    """The VC model directory ``VoiceConverter.from_pretrained(path)`` loads: a bundle's ``vc/``; None: the shipped."""
    from voiceconv.pretrained import default_vc_dir

    if path is None:
        return default_vc_dir()
    if not (path / "config.json").is_file() and (path / "vc" / "config.json").is_file():
        return path / "vc"
    return path


def load_calibration(path: Path | None) -> SimilarityCalibration | None:
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
    centred = (" after the direction all voices share is taken out (a centred cosine)"
               if calibration.center is not None else "")
    return ("Measured with the converter's own speaker encoder, whose cosine is high for almost any two voices, so "
            f"it is{centred} ranked among the same encoder's cosines for {where}: {ranks}. Trained together with the "
            "converter, this encoder may favour its conversions; an independent judge (Resemblyzer, with the [eval] "
            "extra) would not.")


def similarity_markdown(similarity: Similarity) -> list[str]:
    """The similarity table (a column per voice; with a calibration, a rank column too) and how to read it."""
    centred = similarity.calibration is not None and similarity.calibration.center is not None
    name = {JUDGE: "Resemblyzer cosine", CALIBRATED: "own-encoder cosine" + (", centred" if centred else ""),
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
