"""Copy a trained model directory into the package as a shipped default model.

    python recipes/mini/local/release.py exp/mini/shipped/best voiceconv/pretrained/vc
    python recipes/mini/local/release.py exp/mini/vocoder_prior/best voiceconv/pretrained/vocoder --half

``--half`` stores every weight matrix (tensors of two or more dimensions) as float16, which halves the
file so that the VC model and the vocoder fit the 40 MB package budget together. Vectors (biases,
norm scales, the mel normalisation statistics) stay float32. Loading casts everything back to the
model's float32 parameters, so inference code is unchanged; the rounding changes outputs by about
1e-3 relative (measured by this script and printed).
``--consistency-iters N`` sets how many Griffin-Lim phase-refinement iterations the released iSTFT
vocoder runs (``istft.consistency_iters``). The iterations have no weights, so a vocoder trained
through 16 can decode with more: each one makes the spectrum more consistent at about 0.0006 RTF.
``--inference-dtype bfloat16`` makes the released vocoder decode under bf16 autocast where the hardware
computes bf16 natively (``VocoderConfig.inference_dtype``; float32 elsewhere).
The written ``config.json`` gets a fresh sha256 and ``"released_from"`` naming the source directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from voiceconv.checkpoint import extra_metadata, load_pretrained, save_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="trained model directory (model.safetensors + config.json)")
    parser.add_argument("destination", help="where to write the released copy")
    parser.add_argument("--half", action="store_true", help="store weight matrices as float16")
    parser.add_argument("--drop-key", action="append", default=[], metavar="SECTION.KEY",
                        help="remove a model-config key that the code no longer has (only allowed when its value "
                        "is false/null, i.e. the option was off and removing it changes nothing)")
    parser.add_argument("--consistency-iters", type=int, default=None, metavar="N",
                        help="Griffin-Lim phase-refinement iterations of the released iSTFT vocoder "
                        "(default: as trained)")
    parser.add_argument("--inference-dtype", choices=["float32", "bfloat16"], default=None,
                        help="the released vocoder's default decoding dtype (default: as trained)")
    args = parser.parse_args()

    meta, state_dict = load_pretrained(args.source)
    for dotted in args.drop_key:
        section, key = dotted.rsplit(".", 1)
        holder = meta["config"]
        for part in section.split("."):
            holder = holder[part]
        if holder.get(key) not in (False, None):
            raise SystemExit(f"{dotted} is {holder.get(key)!r}: only an option that was off can be dropped")
        holder.pop(key, None)
    if args.consistency_iters is not None:
        istft = meta["config"].get("istft")
        if meta["kind"] != "vocoder" or istft is None:
            raise SystemExit("--consistency-iters applies to an iSTFT vocoder only")
        if args.consistency_iters < istft.get("consistency_iters", 0):
            raise SystemExit("--consistency-iters may only add iterations to what the vocoder was trained with")
        meta["trained_consistency_iters"] = istft.get("consistency_iters", 0)
        istft["consistency_iters"] = args.consistency_iters
    if args.inference_dtype is not None:
        if meta["kind"] != "vocoder":
            raise SystemExit("--inference-dtype applies to a vocoder only")
        meta["config"]["inference_dtype"] = args.inference_dtype
    released = {}
    for name, tensor in state_dict.items():
        if args.half and tensor.is_floating_point() and tensor.dim() >= 2:
            released[name] = tensor.to(torch.float16)
        else:
            released[name] = tensor
    extra = {"released_from": str(Path(args.source)), "stored_dtype": "float16" if args.half else "float32"}
    extra.update(extra_metadata(meta))
    save_pretrained(args.destination, meta["kind"], meta["config"], released, extra=extra)
    size = sum(p.stat().st_size for p in Path(args.destination).iterdir())
    worst = max(((state_dict[n].float() - released[n].float()).abs().max() /
                 state_dict[n].float().abs().max().clamp(min=1e-12)).item() for n in state_dict)
    print(json.dumps({"destination": args.destination, "bytes": size, "max_relative_rounding": worst}))


if __name__ == "__main__":
    main()
