"""voiceconv train --config CONF --data PREPARED --out RUN [--resume] [key=value ...]: train a VC model."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML with 'model:' and 'train:' sections (e.g. "
                        "voiceconv/conf/adain_vc.yaml); on --resume the run's own config.yaml is the default")
    parser.add_argument("--data", required=True, help="directory written by 'voiceconv prepare'")
    parser.add_argument("--out", required=True, help="run directory: config.yaml, train_state.pt, last/, best/, "
                        "checkpoints/, tb/ (TensorBoard), metrics.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its train_state.pt")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else "
                        "cpu; under torchrun each process uses cuda:LOCAL_RANK)")
    parser.add_argument("--vocoder", default=None, help="vocoder directory for TensorBoard audio (default: "
                        "Griffin-Lim)")
    parser.add_argument("--init-from", default=None, metavar="DIR",
                        help="warm start from a released VC model directory (weights and mel statistics; fresh "
                        "optimizer); same as train.init_from=DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.steps=1000 train.batch_size=32 model.decoder.channels=256")


def run(args) -> int:
    import os

    from voiceconv.training.loop import experiment_from_args
    from voiceconv.training.vc_trainer import EXAMPLE_CONFIG, ExperimentConfig, train

    overrides = list(args.overrides)
    if args.init_from:
        if args.resume:
            print("voiceconv train: --init-from starts a new run; it cannot be combined with --resume")
            return 2
        overrides.append(f"train.init_from={os.path.abspath(args.init_from)}")
    experiment = experiment_from_args(ExperimentConfig, args.config, overrides, args.out, args.resume, EXAMPLE_CONFIG)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        t = experiment.train
        print(f"{'resuming' if args.resume else 'training'} {args.out}: {t.steps} steps, batch {t.batch_size} x "
              f"{t.segment_frames} frames, lr {t.lr}")
    scores = train(experiment, args.data, args.out, resume=args.resume, device=args.device,
                   vocoder_dir=args.vocoder, progress=not args.quiet)
    if main:
        shown = {k: v for k, v in scores.items() if k.startswith(("loss/", "val/"))}
        print("final: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        print(f"model: {args.out}/last (best validation: {args.out}/best)")
    return 0
