"""Train the speaker critic that ``train.speaker_critic`` uses (voiceconv/training/speaker_critic.py).

    python recipes/mini/local/train_speaker_critic.py --data data/mini/prepared --out exp/mini/critic \
        --steps 3000 --threads 2

An x-vector style verifier on log-mels, trained on the prepared corpus's training speakers with an
additive-margin softmax. It holds out 10 speakers with the VC trainer's seeded split (with the same seed, a
superset of the mini recipe's 6 validation speakers) and prints their equal error rate. It is our own
network and never a judge: the judges (Resemblyzer, pocketsphinx) only measure.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from voiceconv.evaluation.metrics import equal_error_rate
from voiceconv.training.data import PreparedCorpus
from voiceconv.training.speaker_critic import CriticTrainConfig, held_out_trials, train_critic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared corpus (voiceconv prepare)")
    parser.add_argument("--out", required=True, help="directory for the critic (model.safetensors, config.json)")
    parser.add_argument("--steps", type=int, default=CriticTrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=CriticTrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=CriticTrainConfig.lr)
    parser.add_argument("--seed", type=int, default=CriticTrainConfig.seed)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = CriticTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    critic, scores, held_out = train_critic(args.data, config, device=args.device)
    if len(held_out) >= 2:
        scores["val_eer"] = equal_error_rate(*held_out_trials(critic, PreparedCorpus(args.data), held_out))[0]
    critic.save_pretrained(args.out, extra={"trained_on": args.data, "steps": args.steps, "scores": scores})
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
