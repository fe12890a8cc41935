"""voiceconv probe RUN_OR_MODEL --data PREPARED [--out JSON]: speaker information in codes and vectors."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory, or a training run directory (its best/, else last/)")
    parser.add_argument("--data", required=True, help="directory written by 'voiceconv prepare'")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--speakers", choices=["all", "held-out", "train"], default="all",
                        help="which speakers to probe; held-out/train need a run directory (its config.yaml "
                        "gives train.n_val_speakers and train.seed) and the run's own prepared data")
    parser.add_argument("--chunk-seconds", type=float, default=1.0, help="length of one probe item (default 1.0)")
    parser.add_argument("--max-speakers", type=int, default=200, help="probe at most this many speakers")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def _speakers(args, corpus) -> list[str] | None:
    from pathlib import Path

    import yaml

    from voiceconv.errors import VoiceconvError

    if args.speakers == "all":
        return None
    config_path = Path(args.model) / "config.yaml"
    if not config_path.is_file():
        raise VoiceconvError(f"--speakers {args.speakers} needs a training run directory with config.yaml; "
                             f"{args.model} has none (use --speakers all)")
    train = (yaml.safe_load(config_path.read_text()) or {}).get("train", {})
    train_speakers, held_out = corpus.split_speakers(int(train.get("n_val_speakers", 10)), int(train.get("seed", 0)))
    return held_out if args.speakers == "held-out" else train_speakers


def run(args) -> int:
    import json

    from voiceconv.checkpoint import atomic_write_text, resolve_model_dir
    from voiceconv.evaluation.probe import ProbeConfig, format_table, run_probe
    from voiceconv.models.vc_model import VCModel
    from voiceconv.training.data import PreparedCorpus

    model_dir = resolve_model_dir(args.model)
    model = VCModel.from_pretrained(model_dir, device=args.device)
    corpus = PreparedCorpus(args.data)
    config = ProbeConfig(chunk_seconds=args.chunk_seconds, max_speakers=args.max_speakers)
    report = run_probe(model, corpus, config, speakers=_speakers(args, corpus))
    report = {"model": str(model_dir), "data": str(args.data), "speakers": args.speakers, **report}
    print(f"model {model_dir}")
    print(format_table(report))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
