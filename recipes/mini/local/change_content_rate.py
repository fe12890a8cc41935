"""Give a released VC model a finer content-code rate, keeping every weight it can, for a warm start.

    python recipes/mini/local/change_content_rate.py voiceconv/pretrained/vc /tmp/vc_rate4 \
        --subsample 1 2 1 2 1 1 --upsample 1 1 2 1 2 1

AdaIN-VC subsamples the content code 8x in time. At 86 mel frames/s that is one code every 93 ms,
slower than speech changes phone (about 12-15 a second), and the auto-encoder is where the shipped
model loses most of its words (evaluation reference rows). This script writes a model whose content
encoder keeps more frames, as the starting point of a training round.

The surgery changes no shape but one:
- a content-encoder block whose stride drops keeps its weights (a strided and an unstrided conv have
  the same kernel; the block's residual simply skips its average pool);
- a decoder block whose upsampling factor drops to 1 had a second conv with ``C * up`` outputs, one
  group of ``C`` per sub-frame (pixel shuffle, channel ``c * up + p`` is channel ``c`` of sub-frame
  ``p``); the new conv gets the mean of those groups, i.e. it writes the average of what the old conv
  wrote into the frames it expanded (the block's output differs more: its AdaIN normalises again).

The result is not meant to be used as is (its output is close to, not the same as, the source model's:
the script prints the reconstruction L1 of both on the repository's example source); train from it with
``--init-from``, with the same ``--subsample`` / ``--upsample`` in the config's model section.
"""

from __future__ import annotations

import argparse
import json

import torch

from voiceconv.audio import load_audio
from voiceconv.config import from_dict, to_dict
from voiceconv.features import MelSpectrogram
from voiceconv.models.vc_model import VCConfig, VCModel


def changed_model(source: VCModel, subsample: list[int], upsample: list[int]) -> VCModel:
    """A copy of ``source`` with the content encoder's ``subsample`` and the decoder's ``upsample``."""
    old_sub, old_up = list(source.config.content_encoder.subsample), list(source.config.decoder.upsample)
    if len(subsample) != len(old_sub) or len(upsample) != len(old_up):
        raise SystemExit(f"give one factor per block: {len(old_sub)} subsample, {len(old_up)} upsample factors")
    for what, olds, news in (("content-encoder stride", old_sub, subsample), ("decoder factor", old_up, upsample)):
        for old, new in zip(olds, news):
            if new != old and new != 1:
                raise SystemExit(f"a {what} can only stay or drop to 1 (got {old} -> {new})")
    tree = to_dict(source.config)
    tree["content_encoder"]["subsample"] = list(subsample)
    tree["decoder"]["upsample"] = list(upsample)
    target = VCModel(from_dict(VCConfig, tree), n_speakers=source.n_speakers)  # checks stride == upsample

    state = dict(source.state_dict())
    for index, (old, new) in enumerate(zip(old_up, upsample)):
        if old == new:
            continue
        for name in ("weight", "bias"):
            key = f"decoder.blocks.{index}.conv2.conv.{name}"
            tensor = state[key]
            channels = tensor.shape[0] // old
            # (C * up, ...) -> (C, up, ...): pixel shuffle puts sub-frame p of channel c at c * up + p
            state[key] = tensor.reshape(channels, old, *tensor.shape[1:]).mean(dim=1)
    target.load_state_dict(state, strict=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="released VC model directory")
    parser.add_argument("destination", help="where to write the changed model")
    parser.add_argument("--subsample", type=int, nargs="+", required=True, help="content-encoder strides")
    parser.add_argument("--upsample", type=int, nargs="+", required=True, help="decoder upsampling factors")
    parser.add_argument("--check-audio", default="examples/source.wav", help="speech to print the reconstruction L1 on")
    args = parser.parse_args()

    source = VCModel.from_pretrained(args.source, device="cpu")
    target = changed_model(source, args.subsample, args.upsample).eval()
    audio = load_audio(args.check_audio, source.config.mel.sample_rate)
    mel = MelSpectrogram(source.config.mel)(torch.as_tensor(audio)[None])  # (1, n_mels, T)
    with torch.no_grad():
        errors = {name: (model.convert(mel, model.embed(mel)) - mel).abs().mean().item()
                  for name, model in (("source", source), ("changed", target))}
    path = target.save_pretrained(args.destination)
    print(json.dumps({"destination": str(path), "reconstruction_l1": errors}))


if __name__ == "__main__":
    main()
