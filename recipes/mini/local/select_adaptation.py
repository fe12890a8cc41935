"""Choose the speaker adaptation settings (voiceconv/convert/adapt.py) without any judge.

    python recipes/mini/local/select_adaptation.py voiceconv/pretrained/vc --data data/mini/prepared

For each of the trainer's held-out validation speakers (recorded ones only), the voice is fitted to
the first 60 % of their utterance (at most 8 s, like a user's reference) and the reconstruction L1
(normalised log-mel) is measured on the remaining 40 %: words the fitting never saw. The settings
that rebuild unseen speech of the same voice best are the ones that capture the voice rather than
the reference's content. Prints one row per learning rate, prior, channel basis and reference
condition with the held-out L1 after each number of steps (0 = the speaker encoder's vector, i.e.
plain AdaIN-VC).

``--channel-draws K`` adds rows where the reference first goes through K random recording channels
of the training augmentation (voiceconv/training/channel.py: EQ, band limits, reverberation, noise)
while the held-out part stays clean: a user's references are often worse recordings, and the
fitting should capture the voice, not the channel. ``--prior W`` adds ``W * mean((v - v0)^2)`` to
the fitting loss, which keeps the vector near the encoder's (the encoder was trained to ignore channels).
``--channel-basis K`` fits a smooth per-clip channel curve of K cosines beside the vector and discards
it (voiceconv/convert/adapt.py): the held-out part is still rebuilt with the vector alone.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch

from voiceconv.convert.adapt import MAX_ADAPT_FRAMES, adapt_speaker
from voiceconv.models.vc_model import VCModel
from voiceconv.training.channel import ChannelConfig, corrupt
from voiceconv.training.data import PreparedCorpus


def held_out_error(model: VCModel, speaker: torch.Tensor, mel: torch.Tensor) -> float:
    """L1 of the model's reconstruction of ``mel (n_mels, T)`` with ``speaker (D,)``, normalised domain."""
    with torch.no_grad():
        target = model.normalize(mel[None])
        rebuilt = model.normalize(model.convert(mel[None], speaker))
        return float((rebuilt - target).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="VC model directory")
    parser.add_argument("--data", required=True, help="prepared training corpus (voiceconv prepare)")
    parser.add_argument("--validation-speakers", type=int, default=6, help="the trainer's train.n_val_speakers")
    parser.add_argument("--split-seed", type=int, default=0, help="the trainer's train.seed")
    parser.add_argument("--exclude-speakers", default="^syn_", metavar="REGEX",
                        help="speakers left out (default: the synthetic TTS voices)")
    parser.add_argument("--steps", default="0,25,50,100,200", help="comma-separated step counts")
    parser.add_argument("--lr", default="0.01,0.03", help="comma-separated learning rates")
    parser.add_argument("--channel-draws", type=int, default=0, help="random channels per reference (0: clean only)")
    parser.add_argument("--prior", default="0", help="comma-separated weights of the pull toward the encoder's vector")
    parser.add_argument("--channel-basis", default="0",
                        help="comma-separated numbers of cosines in the reference's channel curve")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    corpus = PreparedCorpus(args.data)
    model = VCModel.from_pretrained(args.model, device="cpu")
    excluded = re.compile(args.exclude_speakers) if args.exclude_speakers else None
    _, validation = corpus.split_speakers(args.validation_speakers, args.split_seed)
    speakers = [s for s in validation if not (excluded and excluded.search(s))]
    if not speakers:
        raise SystemExit("no recorded held-out speakers; check --validation-speakers and --exclude-speakers")
    splits = []
    for speaker in speakers:
        index = corpus.indices_for([speaker])[0]
        n_frames = corpus.utterances[index].n_frames
        mel = torch.as_tensor(corpus.mel(index, 0, n_frames)).float()  # (n_mels, T)
        cut = min(int(0.6 * n_frames), MAX_ADAPT_FRAMES)
        splits.append((mel[:, :cut], mel[:, cut:]))
    steps = [int(value) for value in args.steps.split(",")]
    conditions = {"clean reference": [(reference, held_out) for reference, held_out in splits]}
    if args.channel_draws:
        generator = torch.Generator().manual_seed(0)
        channel = ChannelConfig(probability=1.0)
        conditions["reference through a random channel"] = [
            (corrupt(reference[None], channel, generator, model.mel_config)[0], held_out)
            for reference, held_out in splits for _ in range(args.channel_draws)]
    print(f"{len(speakers)} held-out speakers: {', '.join(speakers)}")
    print("| reference | lr | prior | channel basis | " + " | ".join(f"{n} steps" for n in steps) + " |")
    print("|---|---|---|---|" + "---|" * len(steps))
    settings = [(float(lr), float(prior), int(basis)) for lr in args.lr.split(",")
                for prior in args.prior.split(",") for basis in args.channel_basis.split(",")]
    with torch.no_grad():
        # The encoder's vector of each reference, once: every setting starts its fit from it.
        inits = {condition: [model.embed(reference[None])[0] for reference, _ in cases]
                 for condition, cases in conditions.items()}
    for lr, prior, basis in settings:
        for condition, cases in conditions.items():
            errors = np.zeros(len(steps))
            for (reference, held_out), init in zip(cases, inits[condition]):
                for k, n in enumerate(steps):
                    vector = adapt_speaker(model, [reference], init, steps=n, lr=lr, prior=prior,
                                           channel_basis=basis).vector
                    errors[k] += held_out_error(model, vector, held_out) / len(cases)
            print(f"| {condition} | {lr:g} | {prior:g} | {basis} | " + " | ".join(f"{e:.4f}" for e in errors)
                  + " |", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
