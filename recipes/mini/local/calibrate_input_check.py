"""Calibrate the input check (voiceconv/input_check.py) of a VC model on its training speech.

    python recipes/mini/local/calibrate_input_check.py voiceconv/pretrained/vc --data data/mini/prepared

Reads random 2-8 s spans of ``--n`` utterances of the prepared training corpus, keeps a speaker
bank of some of them and the feature statistics and threshold from the others, and writes
``MODEL_DIR/input_check.safetensors``, which ``VoiceConverter.from_pretrained`` loads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from voiceconv.data import PreparedCorpus
from voiceconv.input_check import MAX_FRAMES, calibrate
from voiceconv.models.vc_model import VCModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="VC model directory")
    parser.add_argument("--data", required=True, help="prepared training corpus (voiceconv prepare)")
    parser.add_argument("--n", type=int, default=900, help="utterances to use (bank + statistics)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    corpus = PreparedCorpus(args.data)
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(corpus), min(args.n, len(corpus)), replace=False)
    # Random spans of 2-8 s, as users' clips are (whole utterances would all be long or all short).
    mels, speakers = [], []
    for i in chosen:
        n_frames = corpus.utterances[int(i)].n_frames
        length = min(n_frames, int(rng.integers(172, 690)), MAX_FRAMES)  # 2-8 s at 86 frames/s
        start = int(rng.integers(n_frames - length + 1))
        mels.append(corpus.mel(int(i), start, length))
        speakers.append(corpus.utterances[int(i)].speaker)
    model = VCModel.from_pretrained(args.model, device="cpu")
    check = calibrate(model, mels, speakers, seed=args.seed)
    from voiceconv.checkpoint import read_config

    check.model_sha256 = read_config(args.model, "vc_model").get("sha256", "")
    path = check.save(args.model)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s: mean {check.mean.tolist()}, "
          f"std {check.std.tolist()}, threshold {check.threshold:.3f}, speaker bank {tuple(check.speaker_bank.shape)}")


if __name__ == "__main__":
    main()
