"""How much of its source's phones a VC model's conversions keep, by the phone recogniser (train.phonetic).

    python recipes/mini/local/phonetic_gap.py voiceconv/pretrained/vc [MORE_MODELS ...] \
        --recognizer recipes/mini/weights/phones --data data/mini/prepared

On seeded batches of training-speaker segments, each segment is converted (mel to mel) to the voice of the
previous segment in the batch and, for the floor, rebuilt in its own voice. Prints ``loss/phonetic`` for both
(the KL per frame of the recogniser's reading of the output from its reading of the source) and, for the
ceiling, for a different utterance read against the source. It is the training term's own measure, on
training speakers, and not a judge: the judges (Resemblyzer, pocketsphinx) only measure held-out pairs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from voiceconv.models.phone_recognizer import PhoneRecognizer
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.phonetic import phonetic_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="VC model directories")
    parser.add_argument("--recognizer", default="recipes/mini/weights/phones")
    parser.add_argument("--data", default="data/mini/prepared")
    parser.add_argument("--batches", type=int, default=8, help="seeded batches; the figures are their mean +- s.e.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--segment-frames", type=int, default=128)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recognizer = PhoneRecognizer.from_pretrained(args.recognizer, device="cpu")
    corpus = PreparedCorpus(args.data)
    train_speakers, _ = corpus.split_speakers(10, 0)  # the critic's and the recogniser's held-out split
    batcher = SegmentBatcher(corpus, args.segment_frames, args.batch_size, seed=args.seed,
                             indices=corpus.indices_for(train_speakers))
    batches = [batcher.batch(k) for k in range(args.batches)]
    partner = torch.roll(torch.arange(args.batch_size), 1)  # segment i takes the voice of segment i - 1

    def summary(values: list[float]) -> str:
        spread = np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
        return f"{np.mean(values):.3f} +- {spread:.3f}"

    other = [float(phonetic_loss(recognizer, b["mel"][partner], b["mel"], b["mask"] * b["mask"][partner]))
             for b in batches]
    print(f"{args.batches} batches of {args.batch_size} segments of {args.segment_frames} frames; "
          f"another utterance read against the source: {summary(other)}")
    print(f"{'model':<40} {'conversion':>16} {'rebuilt':>16}")
    for directory in args.models:
        model = VCModel.from_pretrained(directory, device="cpu", mel_config=corpus.mel_config)
        converted, rebuilt = [], []
        with torch.no_grad():
            for b in batches:
                # VCModel.convert takes no mask: short utterances' padding is converted too, and only the
                # reading is masked.
                speaker = model.embed(b["mel"], b["mask"])  # (B, D)
                converted.append(float(phonetic_loss(recognizer, model.convert(b["mel"], speaker[partner]),
                                                     b["mel"], b["mask"])))
                rebuilt.append(float(phonetic_loss(recognizer, model.convert(b["mel"], speaker), b["mel"], b["mask"])))
        print(f"{directory:<40} {summary(converted):>16} {summary(rebuilt):>16}")


if __name__ == "__main__":
    main()
