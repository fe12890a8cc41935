"""voiceconv import-vocoder hifigan CHECKPOINT --config CONFIG_JSON --out DIR: public HiFi-GAN weights -> voiceconv."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("family", choices=["hifigan"], help="checkpoint family: 'hifigan' reads the jik876/hifi-gan "
                        "release format (LJ, VCTK, UNIVERSAL_V1 generators, V1/V2/V3)")
    parser.add_argument("checkpoint", help="generator file, e.g. g_02500000 (a torch file holding "
                        "{'generator': state_dict}); read with torch.load(weights_only=True)")
    parser.add_argument("--config", required=True, help="the config.json released with the checkpoint")
    parser.add_argument("--out", required=True, help="output vocoder directory (model.safetensors + config.json)")


def run(args) -> int:
    from voiceconv.vocoder.jik876 import import_jik876

    vocoder = import_jik876(args.checkpoint, args.config, args.out)
    c = vocoder.config.hifigan
    print(f"imported HiFi-GAN (resblock {c.resblock}, {c.upsample_initial_channel} initial channels, "
          f"{vocoder.n_parameters() / 1e6:.2f} M parameters) into {args.out}")
    print(f"use it with: voiceconv convert ... --vocoder {args.out}")
    return 0
