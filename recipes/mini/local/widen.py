"""Widen a part of a released VC model without changing what it computes, for a warm start at more capacity.

    python recipes/mini/local/widen.py recipes/mini/weights/round15_invariance /tmp/vc_wide --channels 128
    python recipes/mini/local/widen.py voiceconv/pretrained/vc /tmp/vc_wide --part content_encoder --channels 128

Rounds 11-15 and five probes from them stayed at or below round 11's judge similarity (0.756-0.769), and
round 12 showed that a second cosine on the same objective buys nothing: the model, not the schedule,
looked like the limit. Issue 12 asks for capacity where the learning curve says it pays; training a wider
model from scratch is out of reach on two CPU cores, so this script grows the trained one instead. Round 16
grew the decoder (``--part decoder``, the default); ``content_encoder`` and ``speaker_encoder`` grow the
hidden width (``channels``) of an encoder the same way, leaving its bank and its output size alone.

Zero-initialised growth (as Net2Net's function-preserving expansions, done with zeros rather than copies):
every new channel gets freshly initialised *incoming* weights (conv or linear rows, and in the decoder its
AdaIN scale and bias rows), and every weight *from* a new channel into an old one (conv or linear columns,
the output projection's columns) is zero. Instance norm, AdaIN and the speaker encoder's average act on
each channel alone and the residuals add channel to channel, so the old channels, and what the part
outputs, are exactly what they were; the new channels run alongside with no effect until training gives
them outgoing weights (their gradient is non-zero at once, because their activations are). The other parts
are untouched.

Layouts that widening must respect:
- ``conv2`` of a decoder upsampling block has ``C * up`` outputs; pixel shuffle reads channel ``c`` of
  sub-frame ``p`` at ``c * up + p``, an index that does not depend on ``C``, so the old rows stay in front;
- an AdaIN affine predicts ``[scale (C), bias (C)]`` in one ``(2C, D)`` matrix, so the old bias rows move
  from ``C_old`` to ``C_new``.

The script checks the claim: it prints the largest difference between the two models' conversions of the
repository's example (to float rounding), and refuses to write if it is not small. Train from the result
with ``--init-from`` and the part's ``channels`` set to the new width in the config.
"""

from __future__ import annotations

import argparse
import json

import torch

from voiceconv.audio import load_audio
from voiceconv.config import from_dict, to_dict
from voiceconv.features import MelSpectrogram
from voiceconv.models.vc_model import VCConfig, VCModel

MAX_DIFFERENCE = 1e-4  # log-mel units (natural log); float32 rounding is about 1e-6


def widen_conv(old: torch.Tensor, new: torch.Tensor) -> None:
    """Copy a conv's or linear layer's ``old`` weight or bias into the front of ``new`` in place, with no path
    from a new channel into an old one.

    Weights are ``(out, in, kernel)`` or ``(out, in)``. Rows past the old outputs keep ``new``'s fresh
    initialisation (the new channels' incoming weights); columns past the old inputs are zeroed in the old rows.
    """
    if new.dim() == 1:  # a bias: old outputs in front
        new[: old.shape[0]] = old
        return
    new[: old.shape[0]] = 0.0  # the old rows read nothing from the new channels ...
    new[: old.shape[0], : old.shape[1]] = old  # ... and what they read before from the old ones


def widen_affine(old: torch.Tensor, new: torch.Tensor, old_channels: int, new_channels: int) -> None:
    """AdaIN's ``(2C, ...)`` affine: ``[scale rows, bias rows]``; each half keeps its old rows in front."""
    new[:old_channels] = old[:old_channels]
    new[new_channels: new_channels + old_channels] = old[old_channels:]


PARTS = ("decoder", "content_encoder", "speaker_encoder")  # config sections with a hidden width, `channels`


def widened_model(source: VCModel, channels: int, seed: int = 0, part: str = "decoder") -> VCModel:
    """A copy of ``source`` whose ``part`` has ``channels`` hidden channels and computes the same output."""
    if part not in PARTS:
        raise SystemExit(f"--part must be one of {', '.join(PARTS)}, got {part!r}")
    old_channels = getattr(source.config, part).channels
    if channels <= old_channels:
        raise SystemExit(f"--channels must exceed the {part}'s {old_channels}")
    tree = to_dict(source.config)
    tree[part]["channels"] = channels
    with torch.random.fork_rng():  # the new channels' incoming weights: PyTorch's default init, reproducibly,
        torch.manual_seed(seed)  # without resetting the caller's random state
        target = VCModel(from_dict(VCConfig, tree), n_speakers=source.n_speakers)

    old_state = source.state_dict()
    state = {key: value.clone() for key, value in target.state_dict().items()}
    for key, old in old_state.items():
        new = state[key]
        if new.shape == old.shape:
            state[key] = old.clone()
        elif not key.startswith(f"{part}."):
            raise SystemExit(f"unexpected shape change outside the {part}: {key} "
                             f"{tuple(old.shape)} -> {tuple(new.shape)}")
        elif ".adain" in key:
            widen_affine(old, new, old_channels, channels)
        else:  # a conv or linear weight or bias; an output projection keeps its rows, an input one its inputs
            widen_conv(old, new)
    target.load_state_dict(state, strict=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="released VC model directory")
    parser.add_argument("destination", help="where to write the widened model")
    parser.add_argument("--channels", type=int, required=True, help="the part's new hidden width")
    parser.add_argument("--part", default="decoder", choices=PARTS, help="which part to widen (default: decoder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new channels' initialisation")
    parser.add_argument("--check-audio", default="examples/source.wav", help="speech to check the outputs on")
    args = parser.parse_args()

    source = VCModel.from_pretrained(args.source, device="cpu").eval()
    target = widened_model(source, args.channels, args.seed, args.part).eval()
    audio = load_audio(args.check_audio, source.config.mel.sample_rate)
    mel = MelSpectrogram(source.config.mel)(torch.as_tensor(audio)[None])  # (1, n_mels, T)
    with torch.no_grad():
        # Each model embeds the voice with its own speaker encoder, so a widened one is checked too.
        before = source.convert(mel, source.embed(mel))
        difference = (before - target.convert(mel, target.embed(mel))).abs().max().item()
    if difference > MAX_DIFFERENCE:
        raise SystemExit(f"the widened model differs from the source by {difference:.2e}; not written")
    path = target.save_pretrained(args.destination)
    parameters = {"source": source.n_parameters(), "widened": target.n_parameters()}
    print(json.dumps({"destination": str(path), "max_difference": difference, "parameters": parameters}))


if __name__ == "__main__":
    main()
