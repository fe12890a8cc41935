"""Conversion under recording conditions unlike the training data: similarity and WER, clean vs corrupted.

    python benchmarks/robustness.py --pairs data/mini/eval_pairs.csv --model voiceconv/pretrained/vc \
        --vocoder voiceconv/pretrained/vocoder --out exp/robustness/shipped
    python benchmarks/robustness.py ... --out exp/robustness/new --baseline exp/robustness/shipped/summary.json

For each condition of :mod:`voiceconv.evaluation.conditions` (all made on waveforms, none used in
training) the sources, and for the channel conditions also the target references, are corrupted;
each pair is converted with the corrupted inputs and judged by ``voiceconv evaluate``'s judges
against the *clean* target references, with the *clean* source's pocketsphinx transcript as the
WER reference. Conditions:

- ``clean``: as recorded;
- ``eq``, ``phone``, ``room``: sources and references through another microphone EQ, an 8 kHz
  mu-law telephone path, a simulated room (issue 12's cross-domain check);
- ``noise10``, ``noise5``: sources mixed with hum/fan, keyboard clicks or music (by pair, in turn)
  at 10 and 5 dB SNR; references clean (issue 14's noisy conditions); ``room`` is its reverberant one.

Printed per condition: judge similarity of the output and of the (corrupted) source to the target,
their difference (the gain), acceptance at the EER threshold, WER; then the gain as a share of the
clean gain, and the drop from clean. With ``--baseline`` (another run's summary.json) it also prints
each drop as a share of the baseline model's drop. Results go to ``--out/summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

from voiceconv.evaluation.conditions import CHANNELS as CHANNEL_CONDITIONS

NOISE_CONDITIONS = {"noise10": 10.0, "noise5": 5.0}
ALL_CONDITIONS = ("clean", *CHANNEL_CONDITIONS, *NOISE_CONDITIONS)


def corrupt_file(source: Path, destination: Path, condition: str, seed: int) -> Path:
    """Write ``source`` through ``condition`` to ``destination`` (same rate); returns ``destination``."""
    import soundfile as sf

    from voiceconv.evaluation import conditions

    audio, rate = sf.read(str(source), dtype="float32", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if condition in conditions.CHANNELS:
        out = conditions.apply_channel(audio, rate, condition, seed=seed)
    elif condition in NOISE_CONDITIONS:
        kind = conditions.NOISE_TYPES[seed % len(conditions.NOISE_TYPES)]
        out = conditions.add_noise(audio, rate, NOISE_CONDITIONS[condition], kind, seed=seed)
    else:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(ALL_CONDITIONS)}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(destination), out, rate, subtype="FLOAT")
    return destination


def run_condition(condition: str, pairs, converter, out_dir: Path, transcripts: dict[Path, str],
                  progress: bool, corrupt_references: bool = True) -> dict:
    """Corrupt, convert and judge every pair under ``condition``; returns the evaluate summary.

    ``corrupt_references=False`` keeps the target references clean in the channel conditions too, so
    that a loss can be told apart: the source's channel or the reference's."""
    from voiceconv.audio import save_audio
    from voiceconv.evaluation import evaluate

    work = out_dir / condition
    corrupted: dict[Path, Path] = {}

    def through(path: Path, corrupt: bool) -> Path:
        if condition == "clean" or not corrupt:
            return path
        if path not in corrupted:
            seed = len(corrupted)
            corrupted[path] = corrupt_file(path, work / "inputs" / f"{seed:04d}_{path.stem}.wav", condition, seed)
        return corrupted[path]

    speakers = {}
    rows = []
    for pair in pairs:
        source = through(pair.source, True)
        refs = [through(ref, corrupt_references and condition in CHANNEL_CONDITIONS) for ref in pair.targets]
        key = tuple(refs)
        if key not in speakers:
            speakers[key] = converter.embed_speaker([str(ref) for ref in refs])
        name = f"{pair.index:05d}_{pair.source.stem}.wav"
        save_audio(work / "converted" / name, converter.convert(str(source), speakers[key]), converter.sample_rate)
        rows.append({"source": str(source.resolve()), "target": ";".join(str(ref.resolve()) for ref in pair.targets),
                     "target_speaker": pair.target_speaker, "set": pair.set, "output": name,
                     "transcript": transcripts.get(pair.source, "")})
    pairs_csv = work / "pairs.csv"
    with open(pairs_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return evaluate(pairs_csv, work / "eval", converted_dir=work / "converted", reference_rows=False,
                    progress=progress)


def figures(summary: dict) -> dict[str, float | None]:
    overall = summary["overall"]
    wer = overall["wer"]["output"] if overall["wer"]["output"] is not None else overall["wer"]["output_vs_source_asr"]
    output, source = overall["similarity"]["output"], overall["similarity"]["source"]
    return {"similarity": output, "source_similarity": source, "gain": output - source,
            "accepted": overall["acceptance"]["output"], "wer": wer}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="pairs CSV (source,target[,target_speaker,set])")
    parser.add_argument("--model", default=None, help="VC model directory (default: the shipped one)")
    parser.add_argument("--vocoder", default=None, help="vocoder directory (default: the model's default)")
    parser.add_argument("--out", required=True, help="work and results folder")
    parser.add_argument("--conditions", nargs="+", default=list(ALL_CONDITIONS), choices=ALL_CONDITIONS)
    parser.add_argument("--baseline", default=None, help="another run's summary.json to compare the drops with")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for conversion")
    parser.add_argument("--adapt-steps", type=int, default=None, help="speaker fitting steps (default: the "
                        "converter's; 0: none); references are fitted as the user gives them (corrupted or not)")
    parser.add_argument("--clean-references", action="store_true", help="in the channel conditions, corrupt "
                        "only the sources, as the noise conditions always do (default: sources and references)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from voiceconv.convert.converter import VoiceConverter
    from voiceconv.evaluation import read_pairs
    from voiceconv.evaluation.evaluator import Judges

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    pairs = read_pairs(args.pairs)
    converter = VoiceConverter.from_pretrained(args.model, vocoder=args.vocoder, device="cpu",
                                               adapt_steps=args.adapt_steps)
    # The clean sources' own ASR is the WER reference in every condition (what was actually said).
    judges = Judges()
    transcripts = {pair.source: judges.features(pair.source, ("hypothesis",)).hypothesis for pair in pairs}
    conditions = ["clean", *[c for c in args.conditions if c != "clean"]]
    results = {}
    for condition in conditions:
        start = time.perf_counter()
        summary = run_condition(condition, pairs, converter, out_dir, transcripts, not args.quiet,
                                corrupt_references=not args.clean_references)
        results[condition] = figures(summary)
        results[condition]["seconds"] = time.perf_counter() - start
        print(f"{condition}: {results[condition]}", flush=True)
    clean = results["clean"]
    for values in results.values():
        values["gain_share_of_clean"] = values["gain"] / clean["gain"] if clean["gain"] else None
        values["similarity_drop"] = clean["similarity"] - values["similarity"]
        values["wer_rise"] = (values["wer"] - clean["wer"]) if None not in (values["wer"], clean["wer"]) else None
    baseline = json.loads(Path(args.baseline).read_text())["conditions"] if args.baseline else None
    record = {"pairs": args.pairs, "model": args.model or "shipped", "vocoder": args.vocoder or "default",
              "clean_references": args.clean_references, "conditions": results, "baseline": args.baseline}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(record, indent=2) + "\n")

    def show(value, percent=False):
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return f"{100 * value:.1f}%" if percent else f"{value:.3f}"

    print(f"\nmodel {record['model']}, vocoder {record['vocoder']}, {len(pairs)} pairs")
    header = "| condition | similarity | source similarity | gain | gain / clean gain | accepted | WER | " \
             "similarity drop | WER rise |"
    if baseline:
        header += " similarity drop / baseline's | WER rise / baseline's |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for condition, values in results.items():
        line = (f"| {condition} | {show(values['similarity'])} | {show(values['source_similarity'])} | "
                f"{show(values['gain'])} | {show(values['gain_share_of_clean'], True)} | "
                f"{show(values['accepted'], True)} | {show(values['wer'], True)} | {show(values['similarity_drop'])} | "
                f"{show(values['wer_rise'], True)} |")
        if baseline and condition in baseline and condition != "clean":
            base = baseline[condition]

            def share(ours, theirs):
                return ours / theirs if ours is not None and theirs not in (None, 0) and theirs > 0 else None

            line += (f" {show(share(values['similarity_drop'], base['similarity_drop']), True)} | "
                     f"{show(share(values['wer_rise'], base['wer_rise']), True)} |")
        elif baseline:
            line += " | |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
