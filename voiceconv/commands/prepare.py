"""voiceconv prepare MANIFEST --out DIR: compute and cache log-mels (resumable, parallel).

Example::

    voiceconv prepare data/train.csv --out prepared/train --workers 4

Interrupted (Ctrl-C, a killed job), the same command resumes: finished shards are reused.
"""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from voiceconv.training.prepare import SERIAL_BELOW, SHARD_SIZE

    parser.add_argument("manifest", help="CSV with a header and the columns path,speaker[,transcript]; relative "
                        "paths are resolved against the manifest's folder")
    parser.add_argument("--out", required=True, help="output directory for the feature cache "
                        "(mels.npy, audio.npy, index.csv, meta.json, skipped.csv, shards/)")
    parser.add_argument("--config", help="YAML file whose 'mel:' (or 'model.mel:') section sets the mel front end, "
                        "e.g. a training config (default: the HiFi-GAN 22.05 kHz / 80-band mel)")
    parser.add_argument("--workers", type=_positive_int, default=None,
                        help="worker processes computing shards in parallel; 1 runs in this process (default: "
                        f"min(4, CPUs available), or 1 when fewer than {SERIAL_BELOW} utterances need computing)")
    parser.add_argument("--shard-size", type=_positive_int, default=SHARD_SIZE,
                        help=f"utterances per shard, the unit that a re-run reuses (default: {SHARD_SIZE})")
    parser.add_argument("--no-trim", action="store_true",
                        help="keep leading/trailing silence (default: trim what is 40 dB below the peak)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from voiceconv.config import from_dict, load_yaml
    from voiceconv.features import MelConfig
    from voiceconv.training.prepare import prepare

    mel = MelConfig()
    if args.config:
        data = load_yaml(args.config)
        # A mel-only file has 'mel:' at the top; a training config nests it under 'model:'.
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        where = "mel" if "mel" in data else "model.mel"
        mel = from_dict(MelConfig, data.get("mel", model.get("mel")), where)
    summary = prepare(args.manifest, args.out, mel, workers=args.workers, trim=not args.no_trim,
                      progress=not args.quiet, shard_size=args.shard_size)
    print(f"prepared {summary.utterances} utterances from {summary.speakers} speakers "
          f"({summary.hours:.2f} h) into {args.out}; reused {summary.reused_shards} finished shards, "
          f"computed {summary.computed_shards}")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable files (listed in {args.out}/skipped.csv):")
        for item in summary.skipped[:20]:
            print(f"  {item['reason']}")
        if len(summary.skipped) > 20:
            print(f"  ... and {len(summary.skipped) - 20} more")
    else:
        print("skipped 0 files")
    return 0
