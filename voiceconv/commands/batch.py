"""voiceconv batch PAIRS.csv --out-dir DIR: convert many pairs; resumable, shardable, per-row status.

See :mod:`voiceconv.convert.batch` for the CSV format and the guarantees (re-runs skip finished outputs,
SIGKILL-safe, one bad row fails alone, row i goes to shard i % N).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pairs", help="CSV with columns source,target[,output]; target = reference clips separated "
                        "by ';' or '|', or a .spk file; relative paths are relative to the CSV")
    parser.add_argument("--out-dir", required=True, help="directory for the outputs and the status files")
    parser.add_argument("--pitch", default="off",
                        help="'auto', 'off' or semitones (default: off; see README, Measured results)")
    from voiceconv.commands.convert import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1; each gets "
                        "cpu_count / jobs torch threads, so more jobs than cores only adds memory)")
    parser.add_argument("--shard", default=None, metavar="K/N", help="do only rows i with i %% N == K (0-based); "
                        "default: RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS from the environment, else all rows")
    parser.add_argument("--status", default=None, help="status report CSV (default: OUT_DIR/batch_status.csv; "
                        "a sharded run writes batch_status.shardKofN.csv); its .journal.csv logs every finished row")
    parser.add_argument("--overwrite", action="store_true", help="convert every row again, replacing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from tqdm import tqdm

    from voiceconv.convert.batch import run_batch
    from voiceconv.convert.batch_rows import BatchError, resolve_shard
    from voiceconv.convert.pitch import parse_pitch

    if args.jobs < 1:
        raise BatchError("--jobs must be at least 1")
    if not getattr(args, "verbose", False):
        import logging

        # One "pitch auto: ..." line per row would bury the progress bar and the failure lines.
        logging.getLogger("voiceconv.convert.converter").setLevel(logging.WARNING)
    shard = resolve_shard(args.shard)
    converter = None
    if args.jobs == 1:
        from voiceconv.commands.convert import load_converter

        converter = load_converter(args)
    summary = run_batch(args.pairs, args.out_dir, model=args.model, vocoder=args.vocoder, device=args.device,
                        adapt_steps=args.adapt_steps,
                        pitch=parse_pitch(args.pitch), jobs=args.jobs, shard=shard, status=args.status,
                        overwrite=args.overwrite, converter=converter, progress=not args.quiet,
                        report=lambda line: tqdm.write(line, file=sys.stderr))
    k, n = summary.shard
    prefix = f"shard {k}/{n}: " if n > 1 else ""
    print(f"{prefix}{summary.count('ok')} converted, "
          f"{summary.count('skipped')} skipped (already complete), {summary.failed} failed; "
          f"report: {summary.report_path}")
    warned = [result for result in summary.results if result.warning]
    if warned:
        print(f"{prefix}warning: {len(warned)} source(s) sound unlike the speech the model knows (the 'warning' "
              f"column of {summary.report_path}); their results will probably be poor", file=sys.stderr)
    return 1 if summary.failed else 0
