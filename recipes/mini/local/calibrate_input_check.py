"""Calibrate the input check (voiceconv/convert/input_check.py) of a VC model on its training speech.

    python recipes/mini/local/calibrate_input_check.py voiceconv/pretrained/vc --data data/mini/prepared

Random spans of the prepared corpus (2-8 s for the bank, 1.5-4 s for the threshold, where a clip's score
is noisiest), speaker-balanced over recorded (not synthetic) speakers:
``--n`` from the training speakers form the speaker bank; ``--n-held-out`` from the trainer's
validation speakers (held out of training) give the feature statistics and the threshold, since a
model rebuilds its own training utterances better than a new voice. Writes
``MODEL_DIR/input_check.safetensors``, which ``VoiceConverter.from_pretrained`` loads.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch

from voiceconv.convert.input_check import calibrate
from voiceconv.demo.calibration import speaker_balanced_spans
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus


def spans(corpus, speakers: list[str], count: int, rng,
          seconds: tuple[float, float] = (2.0, 8.0)) -> tuple[list, list[str]]:
    """Log-mels and speakers of ``count`` speaker-balanced random spans of ``seconds`` (low, high)."""
    frames_per_second = corpus.mel_config.sample_rate / corpus.mel_config.hop_length
    low, high = (round(s * frames_per_second) for s in seconds)
    drawn = speaker_balanced_spans(corpus, speakers, count, low, high, rng)
    return [corpus.mel(*span) for _, span in drawn], [speaker for speaker, _ in drawn]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="VC model directory")
    parser.add_argument("--data", required=True, help="prepared training corpus (voiceconv prepare)")
    parser.add_argument("--n", type=int, default=900, help="utterances to use (bank + statistics)")
    parser.add_argument("--validation-speakers", type=int, default=6,
                        help="the trainer's train.n_val_speakers (held out of training; the statistics and "
                        "threshold come from them)")
    parser.add_argument("--split-seed", type=int, default=0, help="the trainer's train.seed")
    parser.add_argument("--n-held-out", type=int, default=200, help="spans of the held-out speakers")
    parser.add_argument("--exclude-speakers", default="^syn_", metavar="REGEX",
                        help="speakers left out (default: the recipe's synthetic TTS voices, which are not "
                        "recordings of people; '' keeps all)")
    parser.add_argument("--held-out-seconds", type=float, nargs=2, default=(1.5, 4.0), metavar=("LOW", "HIGH"),
                        help="span lengths (s) of the held-out clips that set the threshold: short ones, since a "
                        "short clip's score is the noisiest, so a threshold that holds for them holds for longer "
                        "clips (with 2-8 s spans, 6 %% of 2.4 s clips of unseen speakers were flagged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    corpus = PreparedCorpus(args.data)
    rng = np.random.default_rng(args.seed)
    excluded = re.compile(args.exclude_speakers) if args.exclude_speakers else None
    kept = [s for s in corpus.speakers if not (excluded and excluded.search(s))]
    # The trainer's own validation split (same call, same seed): speakers the model never trained on.
    train_speakers, validation_speakers = corpus.split_speakers(args.validation_speakers, args.split_seed)
    bank_speakers = [s for s in train_speakers if s in kept]
    held_out_speakers = [s for s in validation_speakers if s in kept]
    if not bank_speakers or not held_out_speakers:
        raise SystemExit(f"no recorded speakers left for the bank ({len(bank_speakers)}) or the held-out "
                         f"statistics ({len(held_out_speakers)}); check --validation-speakers and --exclude-speakers")
    bank = spans(corpus, bank_speakers, args.n, rng)
    held_out = spans(corpus, held_out_speakers, args.n_held_out, rng, tuple(args.held_out_seconds))
    model = VCModel.from_pretrained(args.model, device="cpu")
    check = calibrate(model, *bank, seed=args.seed, held_out=held_out)
    from voiceconv.checkpoint import read_config

    check.model_sha256 = read_config(args.model, "vc_model").get("sha256", "")
    path = check.save(args.model)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s: mean {check.mean.tolist()}, "
          f"std {check.std.tolist()}, threshold {check.threshold:.3f}, speaker bank {tuple(check.speaker_bank.shape)}")


if __name__ == "__main__":
    main()
