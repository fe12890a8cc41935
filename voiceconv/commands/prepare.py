"""voiceconv prepare MANIFEST --out DIR: compute and cache log-mels (resumable, parallel)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="CSV with columns path,speaker[,transcript]; relative paths are "
                        "resolved against the manifest's folder")
    parser.add_argument("--out", required=True, help="output directory for the feature cache "
                        "(mels.npy, audio.npy, index.csv, meta.json, skipped.csv)")
    parser.add_argument("--config", help="YAML file whose 'mel:' section sets the mel front end "
                        "(default: the HiFi-GAN 22.05 kHz / 80-band mel)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: min(4, CPU count))")
    parser.add_argument("--no-trim", action="store_true",
                        help="keep leading/trailing silence (default: trim at 40 dB below peak)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from voiceconv.config import load_yaml
    from voiceconv.data import prepare
    from voiceconv.features import MelConfig

    mel = MelConfig.from_dict(load_yaml(args.config).get("mel", {})) if args.config else MelConfig()
    summary = prepare(args.manifest, args.out, mel, workers=args.workers, trim=not args.no_trim,
                      progress=not args.quiet)
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
