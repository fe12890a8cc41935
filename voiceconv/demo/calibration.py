"""Calibration of a VC model's own speaker-encoder cosine against real pairs of recordings.

The encoder is trained with the converter, so it rates nearly every conversion 0.98-0.99 (the shipped
model): the raw cosine says little. Ranked among the cosines of *real* pairs it does say something:
"closer to the target than 62 % of same-speaker pairs of training recordings are".

``similarity_calibration.json`` beside the model holds sorted quantiles of the own-encoder cosine of
two random spans of training speech, for same-speaker pairs and for different-speaker pairs, with
the method and data described. ``recipes/mini/local/calibrate_similarity.py`` writes it; the demo
reads it with :meth:`SimilarityCalibration.load`. It is display only: nothing in a conversion reads it.

Since format version 2 it also holds a ``center``: the mean of the unit speaker vectors of training
speech. Every voice shares that direction (it is why any two voices score 0.8 or more), so the
cosine is taken after subtracting it (:meth:`SimilarityCalibration.score`), and the quantiles are of
that centred cosine. It ranks conversions more like the independent judge than the raw cosine does
(``benchmarks/demo_similarity.py``; figures in the model card).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voiceconv.atomic import atomic_path
from voiceconv.errors import CheckpointError

FILE_NAME = "similarity_calibration.json"
FORMAT = "voiceconv-similarity-calibration"
FORMAT_VERSION = 2  # 2: adds the centre direction; version-1 files (raw cosines) still load
N_QUANTILES = 101  # every percentile, 0 to 100
MIN_FRAMES = 86  # 1 s at 22.05 kHz / hop 256: the shortest span worth embedding (the demo's minimum is 0.5 s)


@dataclass
class SimilarityCalibration:
    """Sorted cosine quantiles ``(Q,)`` of same-speaker and different-speaker pairs, at levels ``0..1``."""

    same: np.ndarray  # (Q,) non-decreasing
    different: np.ndarray  # (Q,) non-decreasing
    method: str = ""
    data: dict = field(default_factory=dict)
    model_file_sha256: str = ""  # config.json's "sha256" of the model the cosines came from
    center: np.ndarray | None = None  # (D,) mean unit speaker vector of training speech; None: raw cosines

    def __post_init__(self) -> None:
        self.same = np.sort(np.asarray(self.same, dtype=np.float64).reshape(-1))
        self.different = np.sort(np.asarray(self.different, dtype=np.float64).reshape(-1))
        if self.same.size < 2 or self.different.size < 2:
            raise ValueError("a similarity calibration needs at least 2 quantiles per kind of pair")
        if self.center is not None:
            self.center = np.asarray(self.center, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(self.center)) or not 0.0 <= np.linalg.norm(self.center) < 1.0:
                raise ValueError("the centre must be a finite mean of unit vectors (norm below 1)")

    def score(self, first, second) -> float:
        """The cosine these quantiles are of, for two speaker vectors ``(D,)``: centred when the
        calibration has a centre, else raw. NaN when either vector is missing, zero or not finite."""
        return centred_cosine(first, second, self.center)

    @classmethod
    def from_cosines(cls, same: list[float], different: list[float], n_quantiles: int = N_QUANTILES,
                     **info) -> SimilarityCalibration:
        """Quantiles of raw pair cosines (any number of pairs, at least 2 of each kind)."""
        levels = np.linspace(0.0, 1.0, n_quantiles)
        return cls(np.quantile(np.asarray(same, np.float64), levels),
                   np.quantile(np.asarray(different, np.float64), levels), **info)

    def share_below(self, cosine: float) -> tuple[float, float]:
        """Shares (0-1) of same-speaker and of different-speaker pairs whose cosine is below ``cosine``.

        Linear between quantiles; NaN in, NaN out.
        """
        if not math.isfinite(cosine):
            return math.nan, math.nan
        return (_share_below(self.same, cosine), _share_below(self.different, cosine))

    def describe(self, cosine: float, target: str = "the target") -> str:
        """One phrase for the page, e.g. 'closer to the target than 62 % of real same-speaker pairs are
        (and than 97 % of different-speaker pairs)'."""
        same, different = self.share_below(cosine)
        if math.isnan(same):
            return f"not measurable against {target} (too little sound to embed)"
        return (f"closer to {target} than {100 * same:.0f} % of real same-speaker pairs are "
                f"(and than {100 * different:.0f} % of different-speaker pairs)")

    # ---- files ----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_file_sha256": self.model_file_sha256,
            "method": self.method,
            "data": self.data,
            "levels": np.linspace(0.0, 1.0, self.same.size).round(6).tolist(),
            "same_speaker_quantiles": self.same.round(6).tolist(),
            "different_speaker_quantiles": self.different.round(6).tolist(),
            **({"center": self.center.round(6).tolist()} if self.center is not None else {}),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/similarity_calibration.json`` atomically."""
        path = Path(directory) / FILE_NAME
        with atomic_path(path) as temp:
            temp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SimilarityCalibration | None:
        """The calibration in ``directory``, or None when there is none."""
        path = Path(directory) / FILE_NAME
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
            if meta.get("format") != FORMAT or meta.get("format_version") not in (1, FORMAT_VERSION):
                raise ValueError(f"not a version-1 or version-{FORMAT_VERSION} {FORMAT} file")
            return cls(meta["same_speaker_quantiles"], meta["different_speaker_quantiles"], meta.get("method", ""),
                       meta.get("data", {}), meta.get("model_file_sha256", ""), meta.get("center"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: cannot read the similarity calibration ({error}); re-run "
                                  "recipes/mini/local/calibrate_similarity.py or delete the file") from None


def centred_cosine(first, second, center: np.ndarray | None = None) -> float:
    """Cosine of two speaker vectors ``(D,)`` after each is scaled to unit length and ``center`` ``(D,)``
    subtracted (None: the plain cosine). NaN when either is missing, zero or not finite."""
    if first is None or second is None:
        return math.nan
    vectors = []
    for vector in (first, second):
        vector = np.asarray(vector.detach().cpu() if hasattr(vector, "detach") else vector, np.float64).reshape(-1)
        norm = np.linalg.norm(vector)
        if not np.isfinite(norm) or norm == 0.0:
            return math.nan
        vectors.append(vector / norm - (center if center is not None else 0.0))
    norms = np.linalg.norm(vectors[0]) * np.linalg.norm(vectors[1])
    return float(np.dot(vectors[0], vectors[1]) / norms) if norms > 0.0 else math.nan


def mean_direction(vectors) -> np.ndarray:
    """``(D,)`` mean of the unit-length versions of ``vectors`` ``[(D,), ...]``: the direction all voices share."""
    units = [np.asarray(v, np.float64).reshape(-1) for v in vectors]
    units = [v / np.linalg.norm(v) for v in units if np.isfinite(np.linalg.norm(v)) and np.linalg.norm(v) > 0]
    if not units:
        raise ValueError("no non-zero speaker vectors to average")
    return np.mean(units, axis=0)


def _share_below(quantiles: np.ndarray, cosine: float) -> float:
    levels = np.linspace(0.0, 1.0, quantiles.size)
    return float(np.interp(cosine, quantiles, levels, left=0.0, right=1.0))


# ---------------------------------------------------------------------------------------------------
# sampling spans of a prepared corpus


Span = tuple[int, int, int]  # (utterance index, start frame, length in frames)


def random_span(rng: np.random.Generator, n_frames: int, low: int, high: int) -> tuple[int, int]:
    """A random ``(start, length)`` inside ``n_frames`` with ``low <= length <= high`` where it fits."""
    length = min(n_frames, int(rng.integers(low, high + 1)))
    return int(rng.integers(n_frames - length + 1)), length


def same_speaker_spans(rng: np.random.Generator, utterances: list, indices: list[int], low: int,
                       high: int) -> tuple[Span, Span] | None:
    """Two spans of one speaker: from two different utterances when there are several, else two
    non-overlapping spans of the only one (None when it is too short for two of ``MIN_FRAMES``)."""
    if len(indices) >= 2:
        first, second = (int(i) for i in rng.choice(indices, 2, replace=False))
        return ((first, *random_span(rng, utterances[first].n_frames, low, high)),
                (second, *random_span(rng, utterances[second].n_frames, low, high)))
    index = indices[0]
    half = utterances[index].n_frames // 2
    if half < MIN_FRAMES:
        return None
    # One span in each half, so they never share a frame.
    start_a, length_a = random_span(rng, half, min(low, half), high)
    start_b, length_b = random_span(rng, utterances[index].n_frames - half, min(low, half), high)
    return (index, start_a, length_a), (index, half + start_b, length_b)


def speaker_balanced_spans(corpus, speakers: list[str], count: int, low: int, high: int,
                           rng: np.random.Generator) -> list[tuple[str, Span]]:
    """``count`` random ``(speaker, span)`` of ``low``-``high`` frames: a speaker drawn uniformly, then one
    of their utterances. Drawing utterances uniformly would let one speaker with a thousand utterances
    set the scale. Speakers without utterances are skipped."""
    by_speaker = {speaker: corpus.indices_for([speaker]) for speaker in speakers}
    names = [speaker for speaker, indices in by_speaker.items() if indices]
    if not names:
        raise ValueError("no utterances of the given speakers")
    drawn = []
    for _ in range(count):
        speaker = names[int(rng.integers(len(names)))]
        indices = by_speaker[speaker]
        index = indices[int(rng.integers(len(indices)))]
        drawn.append((speaker, (index, *random_span(rng, corpus.utterances[index].n_frames, low, high))))
    return drawn


def span_vectors(corpus, embed: Callable[[np.ndarray], np.ndarray], speakers: list[str], count: int,
                 seconds: tuple[float, float] = (2.0, 6.0), seed: int = 0) -> list[np.ndarray]:
    """Speaker vectors ``[(D,), ...]`` of ``count`` :func:`speaker_balanced_spans`, for :func:`mean_direction`."""
    frames_per_second = corpus.mel_config.sample_rate / corpus.mel_config.hop_length
    low = max(MIN_FRAMES, int(seconds[0] * frames_per_second))
    high = max(low, int(seconds[1] * frames_per_second))
    spans = speaker_balanced_spans(corpus, speakers, count, low, high, np.random.default_rng(seed))
    return [embed(corpus.mel(*span)) for _, span in spans]


def pair_cosines(corpus, embed: Callable[[np.ndarray], np.ndarray], speakers: list[str], n_pairs: int,
                 seconds: tuple[float, float] = (2.0, 6.0), seed: int = 0,
                 center: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Own-encoder cosines of ``n_pairs`` same-speaker and ``n_pairs`` different-speaker span pairs.

    ``corpus``: a :class:`voiceconv.training.data.PreparedCorpus` (``.utterances``, ``.indices_for``, ``.mel``,
    ``.mel_config``); ``embed``: log-mel ``(n_mels, T)`` -> speaker vector ``(D,)``. Speakers are drawn
    uniformly (not by utterance count), so one speaker with a thousand utterances does not dominate.
    ``center``: cosines are centred on it (:func:`centred_cosine`).
    """
    rng = np.random.default_rng(seed)
    frames_per_second = corpus.mel_config.sample_rate / corpus.mel_config.hop_length
    low = max(MIN_FRAMES, int(seconds[0] * frames_per_second))
    high = max(low, int(seconds[1] * frames_per_second))
    by_speaker = {speaker: corpus.indices_for([speaker]) for speaker in speakers}
    by_speaker = {speaker: indices for speaker, indices in by_speaker.items() if indices}
    pairable = [s for s, indices in by_speaker.items()
                if len(indices) >= 2 or corpus.utterances[indices[0]].n_frames >= 2 * MIN_FRAMES]
    if len(by_speaker) < 2 or not pairable:
        raise ValueError(f"need at least 2 speakers, one with two spans of {MIN_FRAMES} frames; got "
                         f"{len(by_speaker)} speaker(s)")

    def cosine(a: Span, b: Span) -> float:
        return centred_cosine(embed(corpus.mel(*a)), embed(corpus.mel(*b)), center)

    same = []
    while len(same) < n_pairs:
        spans = same_speaker_spans(rng, corpus.utterances, by_speaker[pairable[rng.integers(len(pairable))]],
                                   low, high)
        if spans is not None:
            same.append(cosine(*spans))
    names = list(by_speaker)
    different = []
    for _ in range(n_pairs):
        first, second = (names[int(k)] for k in rng.choice(len(names), 2, replace=False))
        a, b = (int(rng.choice(by_speaker[s])) for s in (first, second))
        different.append(cosine((a, *random_span(rng, corpus.utterances[a].n_frames, low, high)),
                                (b, *random_span(rng, corpus.utterances[b].n_frames, low, high))))
    return same, different
