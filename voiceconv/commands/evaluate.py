"""voiceconv evaluate PAIRS.csv --out REPORT_DIR: judge conversions with independent models, write a report."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pairs", help="CSV with columns source,target[,ground_truth,transcript,set,output,"
                        "target_speaker]; several target refs are separated by ';' or '|'; relative paths start "
                        "at the CSV")
    parser.add_argument("--out", required=True, help="report directory (pairs.csv, summary.json, report.md, PNGs)")
    parser.add_argument("--converted", metavar="DIR", help="judge existing outputs in DIR (named by the CSV's "
                        "output column, default NNNNN_<source stem>.wav as 'voiceconv batch' writes them) instead "
                        "of converting")
    parser.add_argument("--model", help="VC model directory (default: the shipped model)")
    parser.add_argument("--vocoder", help="vocoder directory (default: the model's default vocoder)")
    parser.add_argument("--device", help="torch device for conversion (default: CUDA if available, else CPU); "
                        "the judges always run on the CPU")
    parser.add_argument("--pitch", default="off", help="pitch option of the conversion, as for 'voiceconv "
                        "convert': auto (move the source's pitch range to the target's), off, or semitones")
    parser.add_argument("--probe", metavar="JSON", help="results of 'voiceconv probe ... --out JSON' to include")
    parser.add_argument("--no-reference-rows", action="store_true",
                        help="skip the reference rows (vocoder resynthesis and self-reconstruction of each source, "
                        "judged like the conversion; made whenever a model is at hand: when converting here, or "
                        "with --converted plus --model)")
    parser.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                        help="steps that fit each target voice to its references, as for 'voiceconv convert' "
                        "(default: the converter's, 10; 0: the speaker encoder's vector as is)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from pathlib import Path

    from voiceconv.convert.pitch import parse_pitch
    from voiceconv.evaluation import evaluate

    if args.converted and args.vocoder and not args.model:
        raise ValueError("--converted judges existing files; --vocoder is used only with --model, for the reference "
                         "rows (the model that made the files); drop --vocoder or add --model")
    summary = evaluate(args.pairs, args.out, converted_dir=args.converted, model=args.model, vocoder=args.vocoder,
                       device=args.device, pitch=parse_pitch(args.pitch), probe=args.probe, progress=not args.quiet,
                       reference_rows=not args.no_reference_rows, adapt_steps=args.adapt_steps)
    overall, check = summary["overall"], summary["verification"]

    def show(value, percent=False):
        if value is None:
            return "n/a"
        return f"{100 * value:.1f}%" if percent else f"{value:.3f}"

    print(f"evaluated {overall['pairs']} pairs; report in {Path(args.out) / 'report.md'}")
    print(f"  speaker similarity: converted {show(overall['similarity']['output'])}, "
          f"source {show(overall['similarity']['source'])}, ground truth {show(overall['similarity']['ground_truth'])}")
    print(f"  accepted at EER threshold {show(check['threshold'])} (EER {show(check['eer'], True)}): "
          f"converted {show(overall['acceptance']['output'], True)}, "
          f"source {show(overall['acceptance']['source'], True)}")
    wer = overall["wer"]
    print(f"  WER: converted {show(wer['output'], True)}, source {show(wer['source'], True)}, "
          f"converted vs source ASR {show(wer['output_vs_source_asr'], True)}")
    print(f"  MCD: converted {show(overall['mcd_db']['output'])} dB, source {show(overall['mcd_db']['source'])} dB; "
          f"|F0 gap| {show(overall['f0_gap_semitones']['output_mean_abs'])} st; "
          f"voicing agreement {show(overall['voicing_agreement'], True)}; RTF {show(overall['rtf']['median'])}")
    for stage, section in summary.get("stages", {}).items():
        stage_wer = section["wer"]["output_vs_source_asr"]
        stage_wer = section["wer"]["output"] if stage_wer is None else stage_wer
        print(f"  {stage:>14}: similarity {show(section['similarity']['output'])}, "
              f"accepted {show(section['acceptance']['output'], True)}, WER {show(stage_wer, True)}")
    if check["note"]:
        print(f"  note: {check['note']}")
    return 0
