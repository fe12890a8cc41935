"""Interpolate the weights of two trained models of one architecture (a two-model "soup").

    python recipes/mini/local/average_models.py voiceconv/pretrained/vc exp/mini/shipped_v9/last \
        /tmp/vc_avg --weight 0.5

Writes ``(1 - weight) * first + weight * second`` for every floating-point tensor. It only makes sense
for models on one training lineage (one warm-started from the other), whose weights lie in one basin;
two models trained from separate initialisations average to noise. The configs must match exactly
(mel front end included), and so must tensor names, shapes and any integer tensors. The written
``config.json`` gets a fresh sha256 and ``"averaged_from"`` naming both sources and the weight.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from voiceconv.checkpoint import extra_metadata, load_pretrained, save_pretrained


def interpolate(first: dict, second: dict, weight: float) -> dict:
    """``(1 - weight) * first + weight * second`` per tensor of two state dicts with equal names and shapes.

    Integer tensors (counters, indices) are not interpolated: they must be equal and are kept.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    if first.keys() != second.keys():
        only = sorted(set(first) ^ set(second))
        raise ValueError(f"the models have different tensors (e.g. {only[:3]}); they are not one architecture")
    merged = {}
    for name, a in first.items():
        b = second[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
        if a.is_floating_point():
            # Interpolate in float32 so that float16 released weights do not lose the small steps.
            merged[name] = ((1.0 - weight) * a.float() + weight * b.float()).to(a.dtype)
        elif torch.equal(a, b):
            merged[name] = a.clone()
        else:
            raise ValueError(f"{name}: integer tensors differ, so the models cannot be interpolated")
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="model directory (model.safetensors + config.json)")
    parser.add_argument("second", help="model directory of the same architecture and lineage")
    parser.add_argument("destination", help="where to write the interpolated model")
    parser.add_argument("--weight", type=float, default=0.5, help="share of the second model (0: first, 1: second)")
    args = parser.parse_args()

    first_meta, first = load_pretrained(args.first)
    second_meta, second = load_pretrained(args.second)
    if first_meta["kind"] != second_meta["kind"] or first_meta["config"] != second_meta["config"]:
        raise SystemExit(f"{args.first} and {args.second} have different kinds or configs; only two models of "
                         "one architecture and mel front end can be interpolated")
    try:
        merged = interpolate(first, second, args.weight)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    # Keep the first model's extra metadata (speaker count and so on), minus the release provenance,
    # which "averaged_from" replaces.
    extra = extra_metadata(first_meta)
    extra.pop("released_from", None)
    extra["averaged_from"] = {"first": str(args.first), "second": str(args.second), "weight_of_second": args.weight}
    save_pretrained(Path(args.destination), first_meta["kind"], first_meta["config"], merged, extra)
    print(f"wrote {args.destination}: {1 - args.weight:g} x {args.first} + {args.weight:g} x {args.second}")


if __name__ == "__main__":
    main()
