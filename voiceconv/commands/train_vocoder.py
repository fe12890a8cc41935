"""voiceconv train-vocoder --config CONF --data PREPARED --out RUN [--resume] [--finetune-from-vc DIR]."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="vocoder YAML with 'model:' and 'train:' sections (e.g. "
                        "voiceconv/conf/vocoder_istft.yaml); on --resume the run's own config.yaml is the default")
    parser.add_argument("--data", required=True, help="directory written by 'voiceconv prepare' (mels + audio)")
    parser.add_argument("--out", required=True, help="run directory: config.yaml, train_state.pt, last/, best/, "
                        "checkpoints/, tb/ (TensorBoard), metrics.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its train_state.pt")
    parser.add_argument("--finetune-from-vc", metavar="RUN_OR_MODEL_DIR", default=None,
                        help="train on the mels this VC model (a model directory, or a 'voiceconv train' run "
                        "directory: best/ then last/) reconstructs from the real audio; combine with "
                        "train.init_from=VOCODER_DIR to fine-tune an existing vocoder")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else "
                        "cpu; under torchrun each process uses cuda:LOCAL_RANK)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.steps=2000 train.adversarial_start_step=1000 "
                        "model.istft.dim=256")


def run(args) -> int:
    import os

    from voiceconv.training.loop import experiment_from_args
    from voiceconv.training.vocoder_trainer import EXAMPLE_CONFIG, VocoderExperiment, train

    overrides = list(args.overrides)
    if args.finetune_from_vc:
        overrides.append(f"train.finetune_from_vc={args.finetune_from_vc}")
    experiment = experiment_from_args(VocoderExperiment, args.config, overrides, args.out, args.resume, EXAMPLE_CONFIG)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        t = experiment.train
        print(f"{'resuming' if args.resume else 'training'} {experiment.model.generator} vocoder in {args.out}: "
              f"{t.steps} steps (discriminators from step {t.adversarial_start_step}), batch {t.batch_size} x "
              f"{t.segment_frames} frames, lr {t.lr_g}")
    scores = train(experiment, args.data, args.out, resume=args.resume, device=args.device,
                   progress=not args.quiet)
    if main:
        shown = {k: v for k, v in scores.items() if k.startswith(("loss/", "val/"))}
        print("final: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        print(f"vocoder: {args.out}/last (best validation: {args.out}/best)")
    return 0
