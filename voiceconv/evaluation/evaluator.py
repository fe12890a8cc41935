"""Evaluate conversions of a pairs CSV (:mod:`voiceconv.evaluation.pairs`) with the independent judges and write a
report.

Speaker verification follows the conversion trial exactly: one utterance is scored against the
mean d-vector of a speaker's reference clips. Genuine trials score each reference clip of a
speaker against the mean of that speaker's *other* clips (a speaker with a single clip has it cut
into two halves); impostor trials score each clip against every other speaker's mean. The
threshold at the equal error rate of these real trials is then applied to the converted outputs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voiceconv.audio import load_audio
from voiceconv.evaluation import metrics
from voiceconv.evaluation.judges import EVAL_RATE, FRAME_PERIOD_MS, AsrJudge, SpeakerJudge, WorldJudge
from voiceconv.evaluation.pairs import STAGES, Pair, convert_pairs, read_pairs, reference_outputs, resolve_outputs

log = logging.getLogger(__name__)

MCEP_ORDER = 24  # mel-cepstral coefficients c1..c24 (c0 excluded): the usual MCD setting (e.g. VCC 2018/2020)
TRIM_TOP_DB = 40.0  # leading/trailing frames this far below the clip's peak are silence, dropped before MCD
MAX_IMPOSTOR_TRIALS = 5000  # random subset above this: keeps verification cheap on big pair lists
MIN_HALF_SECONDS = 0.8  # a single reference clip is split into halves only if each half is this long


@dataclass
class ClipFeatures:
    """What the judges say about one clip; computed once per file and reused across pairs."""

    seconds: float
    embedding: np.ndarray | None = None  # (256,) Resemblyzer d-vector
    f0: np.ndarray | None = None  # (T,) Hz at FRAME_PERIOD_MS hops, 0 = unvoiced
    mcep: np.ndarray | None = None  # (T', MCEP_ORDER + 1) of the silence-trimmed span
    hypothesis: str | None = None  # pocketsphinx words


class Judges:
    """The three judges with a per-file feature cache (audio itself is not kept: refs repeat, sources may not)."""

    def __init__(self) -> None:
        self.speaker = SpeakerJudge()
        self.asr = AsrJudge()
        self.world = WorldJudge()
        self.alpha = metrics.all_pass_alpha(EVAL_RATE)
        self._cache: dict[Path, ClipFeatures] = {}

    def describe(self) -> dict[str, str]:
        return {
            "speaker": self.speaker.name,
            "asr": self.asr.name,
            "world": self.world.name,
            "mel_cepstrum": (
                f"{MCEP_ORDER} coefficients (c0 excluded) from the WORLD envelope, all-pass warping alpha "
                f"{self.alpha} at {EVAL_RATE} Hz; leading/trailing silence below -{TRIM_TOP_DB:g} dB trimmed; "
                "exact DTW on the Euclidean distance"
            ),
            "sample_rate": f"{EVAL_RATE} Hz (every clip is resampled to it before judging)",
        }

    def features(self, path: Path, want: tuple[str, ...] = ("embedding", "f0", "hypothesis")) -> ClipFeatures:
        path = Path(path)
        features = self._cache.get(path)
        needed = [name for name in want if features is None or getattr(features, name) is None]
        if features is not None and not needed:
            return features
        audio = load_audio(path, EVAL_RATE)
        if features is None:
            features = self._cache[path] = ClipFeatures(seconds=audio.size / EVAL_RATE)
        if "embedding" in needed:
            features.embedding = self.speaker.embed(audio)
        if "hypothesis" in needed:
            features.hypothesis = self.asr.transcribe(audio)
        if "f0" in needed or "mcep" in needed:
            world = self.world.analyze(audio)
            features.f0 = world.f0
            start, end = _speech_frames(audio, len(world.f0))
            features.mcep = metrics.mel_cepstrum(world.envelope[start:end], MCEP_ORDER, self.alpha)
        return features

    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        return self.speaker.embed(audio)


def _speech_frames(audio: np.ndarray, n_frames: int) -> tuple[int, int]:
    """WORLD frame range ``[start, end)`` between the first and last sound above -TRIM_TOP_DB."""
    import librosa

    _, (start, end) = librosa.effects.trim(audio, top_db=TRIM_TOP_DB, frame_length=512, hop_length=80)
    hop = EVAL_RATE * FRAME_PERIOD_MS / 1000.0
    first, last = int(start // hop), min(n_frames, int(math.ceil(end / hop)) + 1)
    return (first, last) if last - first >= 2 else (0, n_frames)


@dataclass
class Verification:
    """Real genuine/impostor trials from the target references and the EER operating point."""

    genuine: list[float] = field(default_factory=list)
    impostor: list[float] = field(default_factory=list)
    eer: float | None = None
    threshold: float | None = None
    note: str = ""


def speaker_clips(pairs: list[Pair]) -> dict[str, list[Path]]:
    """Reference clips per target speaker; labels that share a clip are merged into one speaker.

    An impostor trial between a speaker and itself would make the EER threshold meaningless.
    """
    parent: dict[str, str] = {}

    def root(label: str) -> str:
        while parent.setdefault(label, label) != label:
            label = parent[label]
        return label

    owner: dict[Path, str] = {}
    for pair in pairs:
        for target in pair.targets:
            if target in owner and root(owner[target]) != root(pair.target_speaker):
                parent[root(pair.target_speaker)] = root(owner[target])
            owner.setdefault(target, pair.target_speaker)
        root(pair.target_speaker)
    clips: dict[str, list[Path]] = {}
    for pair in pairs:
        files = clips.setdefault(root(pair.target_speaker), [])
        files.extend(target for target in pair.targets if target not in files)
    return clips


def verification_trials(judges: Judges, pairs: list[Pair], seed: int = 0) -> Verification:
    """Genuine and impostor trial scores from the pairs' target clips; see the module docstring."""
    clips = speaker_clips(pairs)
    units: dict[str, list[np.ndarray]] = {}
    for speaker, files in clips.items():
        if len(files) >= 2:
            units[speaker] = [judges.features(file, ("embedding",)).embedding for file in files]
            continue
        audio = load_audio(files[0], EVAL_RATE)
        half = audio.size // 2
        if half >= MIN_HALF_SECONDS * EVAL_RATE:
            units[speaker] = [judges.embed_audio(audio[:half]), judges.embed_audio(audio[half:])]
        else:
            units[speaker] = [judges.features(files[0], ("embedding",)).embedding]
    result = Verification()
    for embeddings in units.values():
        if len(embeddings) < 2:
            continue
        for k, embedding in enumerate(embeddings):
            others = embeddings[:k] + embeddings[k + 1 :]
            result.genuine.append(metrics.cosine_similarity(embedding, metrics.mean_embedding(others)))
    means = {speaker: metrics.mean_embedding(embeddings) for speaker, embeddings in units.items()}
    impostor_trials = [
        (speaker, k, other) for speaker, embeddings in units.items() for k in range(len(embeddings)) for other in means
        if other != speaker
    ]
    if len(impostor_trials) > MAX_IMPOSTOR_TRIALS:
        chosen = np.random.default_rng(seed).choice(len(impostor_trials), MAX_IMPOSTOR_TRIALS, replace=False)
        impostor_trials = [impostor_trials[i] for i in sorted(chosen)]
    for speaker, k, other in impostor_trials:
        result.impostor.append(metrics.cosine_similarity(units[speaker][k], means[other]))
    if not result.genuine or not result.impostor:
        result.note = (
            "no EER: needs at least two target speakers and one speaker with two reference clips (or one clip "
            f"of at least {2 * MIN_HALF_SECONDS:g} s); add target_speaker labels or more references"
        )
        return result
    result.eer, result.threshold = metrics.equal_error_rate(result.genuine, result.impostor)
    return result


def _nan_to_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def score_pair(judges: Judges, pair: Pair, output: Path, compute_seconds: float | None) -> dict:
    """Every per-pair metric, as one flat CSV row (NaN where a metric does not apply)."""
    want_mcep = ("embedding", "f0", "hypothesis", "mcep") if pair.ground_truth else ("embedding", "f0", "hypothesis")
    source = judges.features(pair.source, want_mcep)
    converted = judges.features(output, want_mcep)
    refs = [judges.features(target, ("embedding", "f0")) for target in pair.targets]
    target_embedding = metrics.mean_embedding([ref.embedding for ref in refs])
    target_f0 = [ref.f0 for ref in refs]
    row = {
        "index": pair.index,
        "set": pair.set,
        "source": str(pair.source),
        "target": ";".join(str(target) for target in pair.targets),
        "target_speaker": pair.target_speaker,
        "output": str(output),
        "ground_truth": str(pair.ground_truth) if pair.ground_truth else "",
        "source_seconds": source.seconds,
        "output_seconds": converted.seconds,
        "sim_output": metrics.cosine_similarity(converted.embedding, target_embedding),
        "sim_source": metrics.cosine_similarity(source.embedding, target_embedding),
        "sim_ground_truth": math.nan,
        "transcript": pair.transcript or "",
        "asr_reference": "transcript" if pair.transcript else "source_asr",
        "hyp_output": converted.hypothesis,
        "hyp_source": source.hypothesis,
        "mcd_output": math.nan,
        "mcd_source": math.nan,
        "f0_gap_output_st": metrics.semitone_gap(converted.f0, target_f0),
        "f0_gap_source_st": metrics.semitone_gap(source.f0, target_f0),
        "voicing_agreement": metrics.voicing_agreement(source.f0, converted.f0),
        "compute_seconds": compute_seconds if compute_seconds is not None else math.nan,
        "rtf": metrics.real_time_factor(compute_seconds, converted.seconds) if compute_seconds else math.nan,
    }
    reference = pair.transcript if pair.transcript else source.hypothesis
    row["wer_output_errors"], row["wer_words"] = metrics.word_errors(reference, converted.hypothesis)
    row["wer_source_errors"], _ = metrics.word_errors(reference, source.hypothesis)
    row["wer_output"] = metrics.word_error_rate(reference, converted.hypothesis)
    # Against its own hypothesis the source scores 0 by construction: only a transcript gives a baseline.
    row["wer_source"] = metrics.word_error_rate(reference, source.hypothesis) if pair.transcript else math.nan
    if pair.ground_truth:
        truth = judges.features(pair.ground_truth, ("embedding", "mcep"))
        row["sim_ground_truth"] = metrics.cosine_similarity(truth.embedding, target_embedding)
        row["mcd_output"] = metrics.mel_cepstral_distortion(converted.mcep, truth.mcep)
        row["mcd_source"] = metrics.mel_cepstral_distortion(source.mcep, truth.mcep)
    return row


def _mean(values) -> float | None:
    values = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(values)) if values else None


def _median(values) -> float | None:
    values = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.median(values)) if values else None


def summarize(rows: list[dict], threshold: float | None) -> dict:
    """Aggregates for one group of rows (one speaker set, or all)."""
    with_transcript = [row for row in rows if row["asr_reference"] == "transcript"]
    without_transcript = [row for row in rows if row["asr_reference"] != "transcript"]

    def corpus_wer(group, errors_key):
        words = sum(row["wer_words"] for row in group)
        return sum(row[errors_key] for row in group) / words if words else None

    summary = {
        "pairs": len(rows),
        "pairs_with_ground_truth": sum(1 for row in rows if row["ground_truth"]),
        "pairs_with_transcript": len(with_transcript),
        "similarity": {
            "output": _mean(row["sim_output"] for row in rows),
            "source": _mean(row["sim_source"] for row in rows),
            "ground_truth": _mean(row["sim_ground_truth"] for row in rows),
        },
        "acceptance": {
            name: (metrics.acceptance_rate([row[f"sim_{name}"] for row in rows], threshold) if threshold is not None
                   else None)
            for name in ("output", "source", "ground_truth")
        },
        "wer": {
            "output": corpus_wer(with_transcript, "wer_output_errors"),
            "source": corpus_wer(with_transcript, "wer_source_errors"),
            "output_vs_source_asr": corpus_wer(without_transcript, "wer_output_errors"),
        },
        "mcd_db": {
            "output": _mean(row["mcd_output"] for row in rows),
            "source": _mean(row["mcd_source"] for row in rows),
        },
        "f0_gap_semitones": {
            "output_mean_abs": _mean(abs(row["f0_gap_output_st"]) for row in rows),
            "source_mean_abs": _mean(abs(row["f0_gap_source_st"]) for row in rows),
            "output_mean_signed": _mean(row["f0_gap_output_st"] for row in rows),
        },
        "voicing_agreement": _mean(row["voicing_agreement"] for row in rows),
        "rtf": {
            "median": _median(row["rtf"] for row in rows),
            "mean": _mean(row["rtf"] for row in rows),
        },
    }
    for key in ("acceptance", "wer"):
        summary[key] = {name: _nan_to_none(value) for name, value in summary[key].items()}
    return summary


def evaluate(
    pairs_csv: str | Path,
    out_dir: str | Path,
    *,
    converted_dir: str | Path | None = None,
    model: str | None = None,
    vocoder: str | None = None,
    device: str | None = None,
    pitch: str | float | None = None,
    probe: str | Path | None = None,
    progress: bool = True,
    reference_rows: bool = True,
    adapt_steps: int | None = None,
) -> dict:
    """Run the whole evaluation and write pairs.csv, summary.json, report.md and plots into ``out_dir``.

    With ``reference_rows`` and a model (converting here, or ``model`` given with
    ``converted_dir``), the sources are also resynthesised by the vocoder and reconstructed by the
    VC model toward their own voice, and judged the same way (``summary["stages"]``), so the loss
    of the vocoder, of the auto-encoder and of the speaker change can be read apart.
    ``adapt_steps``: the converter's speaker fitting (None: its default; see ``VoiceConverter``).
    Returns the summary dictionary (also in summary.json).
    """
    from tqdm import tqdm

    from voiceconv.evaluation import report

    pairs = read_pairs(pairs_csv)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probe_results = report.read_probe(probe) if probe else None
    judges = Judges()  # first: a missing judge fails before minutes of conversion
    compute_seconds: dict[int, float] = {}
    converter = None
    if converted_dir is None or (reference_rows and model is not None):
        from voiceconv.convert.converter import VoiceConverter

        converter = VoiceConverter.from_pretrained(model, vocoder=vocoder, device=device, adapt_steps=adapt_steps)
    if converted_dir is not None:
        outputs = resolve_outputs(pairs, Path(converted_dir))
        conversion = {"converted_dir": str(converted_dir)}
    else:
        outputs, compute_seconds, conversion = convert_pairs(pairs, out_dir, model, vocoder, device, pitch, progress,
                                                             converter=converter)
    references = reference_outputs(pairs, out_dir, converter, progress) if reference_rows and converter else {}
    rows = [
        score_pair(judges, pair, outputs[pair.index], compute_seconds.get(pair.index))
        for pair in tqdm(pairs, desc="judging", disable=not progress)
    ]
    stage_rows = {
        stage: [score_pair(judges, pair, files[pair.index], None)
                for pair in tqdm(pairs, desc=f"judging {stage}", disable=not progress)]
        for stage, files in references.items()
    }
    verification = verification_trials(judges, pairs)
    for row in [*rows, *(row for group in stage_rows.values() for row in group)]:
        for name in ("output", "source", "ground_truth"):
            score = row[f"sim_{name}"]
            accepted = verification.threshold is not None and math.isfinite(score)
            row[f"accepted_{name}"] = int(score >= verification.threshold) if accepted else ""
    for stage, group in stage_rows.items():
        report.write_pairs_csv(out_dir / f"pairs_{stage}.csv", group)
    sets = sorted({row["set"] for row in rows})
    summary = {
        "pairs_csv": str(pairs_csv),
        "conversion": conversion,
        "judges": judges.describe(),
        "verification": {
            "eer": verification.eer,
            "threshold": verification.threshold,
            "genuine_trials": len(verification.genuine),
            "impostor_trials": len(verification.impostor),
            "genuine_mean": _mean(verification.genuine),
            "impostor_mean": _mean(verification.impostor),
            "note": verification.note,
        },
        "overall": summarize(rows, verification.threshold),
        "sets": {name: summarize([row for row in rows if row["set"] == name], verification.threshold)
                 for name in sets},
        "probe": probe_results,
    }
    if stage_rows:
        summary["stages"] = {stage: summarize(group, verification.threshold) for stage, group in stage_rows.items()}
        summary["stages"]["conversion"] = summary["overall"]
        summary["stage_descriptions"] = dict(STAGES)
    examples = report.pick_examples(pairs, rows)
    report.write_report(out_dir, summary, rows, verification, examples)
    return summary
