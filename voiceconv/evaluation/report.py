"""Write the evaluation report: pairs.csv, summary.json, report.md and PNG plots.

Plots (matplotlib, Agg backend, no display needed):
- ``similarity_hist.png``: speaker-similarity distributions of the source baseline, the converted
  outputs, the ground truth, and the real genuine / impostor verification trials, with the EER
  threshold;
- ``similarity_vs_wer.png``: per pair, speaker similarity against WER (the trade-off a VC model
  makes between sounding like the target and keeping the words);
- ``mel_examples.png``: log-mel spectrograms of a few source / converted / target / ground-truth clips.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
from pathlib import Path

import numpy as np

from voiceconv.checkpoint import atomic_write_text
from voiceconv.errors import VoiceconvError

PAIR_COLUMNS = (
    "index", "set", "source", "target", "target_speaker", "output", "ground_truth", "source_seconds",
    "output_seconds", "sim_output", "sim_source", "sim_ground_truth", "accepted_output", "accepted_source",
    "accepted_ground_truth", "transcript", "asr_reference", "hyp_output", "hyp_source", "wer_output", "wer_source",
    "wer_output_errors", "wer_source_errors", "wer_words", "mcd_output", "mcd_source", "f0_gap_output_st",
    "f0_gap_source_st", "voicing_agreement", "compute_seconds", "rtf",
)
MAX_TABLE_ROWS = 40  # per-pair rows shown in report.md; pairs.csv has them all
N_EXAMPLES = 3  # spectrogram examples in mel_examples.png
EXAMPLE_SECONDS = 4.0  # clips are cut to this in mel_examples.png, so a long clip's detail stays visible


def read_probe(path: str | Path) -> dict:
    """Load ``voiceconv probe --out JSON`` results (any JSON object; shown as a flattened table)."""
    path = Path(path)
    if not path.is_file():
        raise VoiceconvError(f"{path}: probe results not found; write them with 'voiceconv probe ... --out {path}'")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise VoiceconvError(f"{path}: not valid JSON ({error}); pass the file 'voiceconv probe --out' wrote") from None
    if not isinstance(data, dict):
        raise VoiceconvError(f"{path}: expected a JSON object from 'voiceconv probe --out', got {type(data).__name__}")
    return data


def _flatten(data, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dicts -> [("a / b", value)]; lists of scalars are joined, other lists are enumerated."""
    items = []
    if isinstance(data, dict):
        for key, value in data.items():
            items.extend(_flatten(value, f"{prefix} / {key}" if prefix else str(key)))
    elif isinstance(data, list) and not all(isinstance(value, (int, float, str, bool)) or value is None
                                            for value in data):
        for k, value in enumerate(data):
            items.extend(_flatten(value, f"{prefix} [{k}]"))
    else:
        items.append((prefix, data))
    return items


def _format(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    if isinstance(value, list):
        return ", ".join(_format(item, digits) for item in value)
    return str(value)


def _percent(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def pick_examples(pairs, rows: list[dict]) -> list[dict[str, Path]]:
    """Up to N_EXAMPLES pairs for the spectrogram figure: the first pair of each set, then the next ones."""
    chosen, seen_sets = [], set()
    for pair in pairs:
        if pair.set not in seen_sets:
            seen_sets.add(pair.set)
            chosen.append(pair.index)
    chosen = (chosen + [pair.index for pair in pairs if pair.index not in chosen])[:N_EXAMPLES]
    by_index = {row["index"]: row for row in rows}
    examples = []
    for index in chosen:
        pair = next(pair for pair in pairs if pair.index == index)
        clips = {"source": pair.source, "converted": Path(by_index[index]["output"]), "target ref": pair.targets[0]}
        if pair.ground_truth:
            clips["ground truth"] = pair.ground_truth
        examples.append({"title": f"pair {index} ({pair.set})", "clips": clips})
    return examples


def write_pairs_csv(path: Path, rows: list[dict]) -> None:
    def cell(value):
        if isinstance(value, float):
            return "" if not math.isfinite(value) else f"{value:.6g}"
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PAIR_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: cell(row.get(key, "")) for key in PAIR_COLUMNS})


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from voiceconv.evaluation.judges import JudgeMissingError

        raise JudgeMissingError("the report's plots need matplotlib: pip install matplotlib") from None

    matplotlib.use("Agg")  # files only: works on headless servers and in tests
    import matplotlib.pyplot as plt

    return plt


def plot_similarity_histogram(path: Path, rows: list[dict], verification) -> None:
    plt = _pyplot()
    groups = {
        "source (baseline)": [row["sim_source"] for row in rows],
        "converted": [row["sim_output"] for row in rows],
        "ground truth": [row["sim_ground_truth"] for row in rows],
        "genuine trials": list(verification.genuine),
        "impostor trials": list(verification.impostor),
    }
    groups = {name: [v for v in values if math.isfinite(v)] for name, values in groups.items()}
    groups = {name: values for name, values in groups.items() if values}
    everything = np.concatenate([np.asarray(values) for values in groups.values()])
    low = max(-1.0, math.floor(everything.min() * 20) / 20 - 0.05)  # a 0.05 margin below the lowest score
    bins = np.linspace(low, 1.0, int(round((1.0 - low) / 0.0125)) + 1)  # 0.0125-wide bins
    colours = {"source (baseline)": "tab:grey", "converted": "tab:blue", "ground truth": "tab:green",
               "genuine trials": "tab:olive", "impostor trials": "tab:red"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in groups.items():
        filled = name in ("source (baseline)", "converted")
        ax.hist(values, bins=bins, density=True, histtype="stepfilled" if filled else "step",
                alpha=0.45 if filled else 1.0, linewidth=1.8, color=colours[name], label=f"{name} (n={len(values)})")
    if verification.threshold is not None:
        ax.axvline(verification.threshold, color="black", linestyle="--",
                   label=f"EER threshold {verification.threshold:.3f} (EER {100 * verification.eer:.1f}%)")
    ax.set_xlabel("cosine similarity to the target speaker's reference embedding (Resemblyzer)")
    ax.set_ylabel("density")
    ax.set_title("Speaker similarity")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_similarity_vs_wer(path: Path, rows: list[dict], verification) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sets = sorted({row["set"] for row in rows})
    markers = "os^Dv<>p"
    for k, name in enumerate(sets):
        group = [row for row in rows if row["set"] == name and math.isfinite(row["wer_output"])]
        ax.scatter([row["sim_output"] for row in group], [row["wer_output"] for row in group],
                   marker=markers[k % len(markers)], alpha=0.75, label=f"converted: {name}")
    sources = [row for row in rows if math.isfinite(row["wer_source"])]
    if sources:
        ax.scatter([row["sim_source"] for row in sources], [row["wer_source"] for row in sources],
                   marker="x", color="tab:grey", alpha=0.75, label="source (baseline)")
    if verification.threshold is not None:
        ax.axvline(verification.threshold, color="black", linestyle="--", label="EER threshold")
    references = {row["asr_reference"] for row in rows}
    ylabel = "WER vs transcript" if references == {"transcript"} else "WER (vs transcript, else vs source ASR)"
    ax.set_xlabel("speaker similarity to target (cosine)")
    ax.set_ylabel(ylabel + " (pocketsphinx)")
    ax.set_title("Speaker similarity vs intelligibility: right and low is best")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mel_examples(path: Path, examples: list[dict]) -> None:
    """Log-mel spectrograms (80 bands, 16 kHz, 10 ms hop, librosa) of the first seconds of each example's clips."""
    import librosa

    from voiceconv.audio import load_audio
    from voiceconv.evaluation.judges import EVAL_RATE

    plt = _pyplot()
    n_cols = max(len(example["clips"]) for example in examples)
    fig, axes = plt.subplots(len(examples), n_cols, figsize=(3.4 * n_cols, 2.6 * len(examples)), squeeze=False)
    for r, example in enumerate(examples):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(example["clips"]):
                ax.axis("off")
                continue
            label, clip = list(example["clips"].items())[c]
            audio = load_audio(clip, EVAL_RATE, allow_silence=True)[: int(EXAMPLE_SECONDS * EVAL_RATE)]
            mel = librosa.feature.melspectrogram(y=audio, sr=EVAL_RATE, n_fft=1024, hop_length=160, n_mels=80)
            db = librosa.power_to_db(mel, ref=np.max, top_db=80.0)  # (80, frames)
            ax.imshow(db, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, audio.size / EVAL_RATE, 0, 80))
            ax.set_title(f"{example['title']}: {label}", fontsize=8)
            ax.set_xlabel("s", fontsize=7)
            ax.set_ylabel("mel band", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _results_table(summary: dict) -> list[str]:
    sim, acc, wer, mcd = summary["similarity"], summary["acceptance"], summary["wer"], summary["mcd_db"]
    pitch = summary["f0_gap_semitones"]
    lines = [
        "| metric | converted | source (baseline) | ground truth |",
        "|---|---|---|---|",
        f"| speaker similarity to target, cosine (higher is better) | {_format(sim['output'])} | "
        f"{_format(sim['source'])} | {_format(sim['ground_truth'])} |",
        f"| accepted as target at the EER threshold (higher is better) | {_percent(acc['output'])} | "
        f"{_percent(acc['source'])} | {_percent(acc['ground_truth'])} |",
        f"| WER vs transcript, {summary['pairs_with_transcript']} pairs (lower is better) | "
        f"{_percent(wer['output'])} | {_percent(wer['source'])} | |",
    ]
    if wer["output_vs_source_asr"] is not None:
        lines.append(f"| WER vs the source's ASR hypothesis (pairs without transcript) | "
                     f"{_percent(wer['output_vs_source_asr'])} | 0% by construction | |")
    lines += [
        f"| MCD-DTW vs ground truth, dB, {summary['pairs_with_ground_truth']} pairs (lower is better) | "
        f"{_format(mcd['output'], 2)} | {_format(mcd['source'], 2)} | 0 |",
        f"| mean abs. log-F0 gap to target refs, semitones (lower is better) | {_format(pitch['output_mean_abs'], 2)}"
        f" | {_format(pitch['source_mean_abs'], 2)} | |",
        f"| mean signed log-F0 gap, semitones (+ = higher than target) | "
        f"{_format(pitch['output_mean_signed'], 2)} | | |",
        f"| voiced/unvoiced frame agreement with the source (higher is better) | "
        f"{_percent(summary['voicing_agreement'])} | 100% by construction | |",
        f"| real-time factor of conversion, median (lower is faster) | {_format(summary['rtf']['median'], 4)} | | |",
    ]
    return lines


def _stages_table(summary: dict) -> list[str]:
    """Where the loss happens: the reference rows beside the conversion, same pairs, same judges."""
    stages, descriptions = summary["stages"], summary.get("stage_descriptions", {})

    def wer(section: dict):
        value = section["wer"]["output_vs_source_asr"]
        return value if value is not None else section["wer"]["output"]

    lines = ["## Where the loss happens (reference rows)", "",
             "The same sources and target references, judged the same way. WER is against the source's own "
             "pocketsphinx transcript (or the given transcript), so the source itself scores 0 %; each row's "
             "increase over the row above is what that stage loses.", "",
             "| row | similarity to target | accepted as target | WER | voicing agreement |", "|---|---|---|---|---|"]
    previous = None
    for stage in ("resynthesis", "reconstruction", "conversion"):
        if stage not in stages:
            continue
        section = stages[stage]
        added = "" if previous is None or wer(section) is None or wer(previous) is None else \
            f" (+{100 * (wer(section) - wer(previous)):.1f} points)"
        lines.append(f"| {stage}: {descriptions.get(stage, '')} | {_format(section['similarity']['output'])} | "
                     f"{_percent(section['acceptance']['output'])} | {_percent(wer(section))}{added} | "
                     f"{_percent(section['voicing_agreement'])} |")
        previous = section
    return lines + [""]


def write_markdown(path: Path, summary: dict, rows: list[dict], verification, plots: list[str]) -> None:
    from voiceconv import __version__

    judges, check = summary["judges"], summary["verification"]
    conversion = summary["conversion"]
    if "converted_dir" in conversion:
        how = f"existing outputs from `{conversion['converted_dir']}` (no conversion, so no real-time factor)"
    else:
        how = (f"converted here with model `{conversion['model']}`, vocoder `{conversion['vocoder']}`, "
               f"device `{conversion['device']}`, pitch `{conversion['pitch']}`")
    lines = [
        "# voiceconv evaluation report",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by voiceconv {__version__} from "
        f"`{summary['pairs_csv']}`: {summary['overall']['pairs']} pairs in {len(summary['sets'])} speaker set(s) "
        f"({', '.join(summary['sets'])}). Outputs: {how}.",
        "",
        "## Judges and thresholds",
        "",
        "The judges are independent pretrained models; voiceconv never trains on them or imports them in training.",
        "",
        f"- Speaker: {judges['speaker']}. Similarity is the cosine between a clip's d-vector and the mean d-vector "
        "of the target's reference clips.",
        f"- Verification threshold: cosine >= {_format(check['threshold'], 4)}, the equal-error-rate point of "
        f"{check['genuine_trials']} genuine and {check['impostor_trials']} impostor trials built from the target "
        f"references (EER {_percent(check['eer'])}; mean genuine score {_format(check['genuine_mean'])}, "
        f"mean impostor score {_format(check['impostor_mean'])}). Genuine trials score one reference clip against "
        "the speaker's other clips; clips cut from one recording score higher than clips from different days, "
        f"which makes the threshold strict. {check['note']}".rstrip(),
        f"- Content: {judges['asr']}; WER after lower-casing and removing punctuation.",
        f"- Spectral distortion: {judges['mel_cepstrum']}.",
        f"- Pitch: {judges['world']}; gap = 12 x (mean voiced log2 F0 of the clip - that of the target refs).",
        f"- Audio: {judges['sample_rate']}.",
        "",
    ]
    sections = [("All pairs", summary["overall"])] + [(f"Set: {name}", s) for name, s in summary["sets"].items()]
    if len(summary["sets"]) == 1:
        sections = sections[:1]
    for title, section in sections:
        lines += [f"## {title} ({section['pairs']} pairs)", "", *_results_table(section), ""]
    if summary.get("stages"):
        lines += _stages_table(summary)
    if summary.get("probe"):
        lines += ["## Speaker information probe (`voiceconv probe`)", "",
                  "Accuracy of a classifier predicting the speaker from each representation: high for speaker "
                  "vectors, near chance for content codes is what disentanglement means.", "",
                  "| measurement | value |", "|---|---|"]
        lines += [f"| {key} | {_format(value)} |" for key, value in _flatten(summary["probe"])]
        lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{name}]({name})" for name in plots]
    lines += ["", f"## Per-pair results (first {min(len(rows), MAX_TABLE_ROWS)} of {len(rows)}; all in pairs.csv)",
              "", "| # | set | source | target | sim out | sim src | accepted | WER out | MCD out | F0 gap st | "
              "voicing | RTF |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows[:MAX_TABLE_ROWS]:
        target = Path(row["target"].split(";")[0]).name + (" +more" if ";" in row["target"] else "")
        lines.append(
            f"| {row['index']} | {row['set']} | {Path(row['source']).name} | {target} | {_format(row['sim_output'])} | "
            f"{_format(row['sim_source'])} | {_format(row['accepted_output'])} | {_percent(row['wer_output'])} | "
            f"{_format(row['mcd_output'], 2)} | {_format(row['f0_gap_output_st'], 2)} | "
            f"{_percent(row['voicing_agreement'])} | {_format(row['rtf'], 4)} |"
        )
    atomic_write_text(path, "\n".join(lines) + "\n")


def _json_safe(value):
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(out_dir: Path, summary: dict, rows: list[dict], verification, examples: list[dict]) -> None:
    """Everything into ``out_dir``: pairs.csv, summary.json, the PNG plots, then report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_pairs_csv(out_dir / "pairs.csv", rows)
    atomic_write_text(out_dir / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    plots = ["similarity_hist.png", "similarity_vs_wer.png"]
    plot_similarity_histogram(out_dir / plots[0], rows, verification)
    plot_similarity_vs_wer(out_dir / plots[1], rows, verification)
    if examples:
        plots.append("mel_examples.png")
        plot_mel_examples(out_dir / plots[-1], examples)
    write_markdown(out_dir / "report.md", summary, rows, verification, plots)
