"""Calibrate a VC model's own speaker-similarity score against real pairs of its training recordings.

    python recipes/mini/local/calibrate_similarity.py voiceconv/pretrained/vc --data data/mini/prepared

Embeds random 2-6 s spans of the prepared training corpus with the model's own speaker encoder and
writes the sorted quantiles of the cosine for same-speaker pairs (two different spans of one speaker)
and different-speaker pairs to ``MODEL_DIR/similarity_calibration.json``. The cosine is centred: the mean
unit vector of ``--center-spans`` other spans (the direction every voice shares) is subtracted first
(:mod:`voiceconv.demo.calibration`). The web demo then shows where a conversion's own-encoder
cosine ranks among real pairs when the independent judge (Resemblyzer) is not installed. Display
only: no conversion reads the file.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch

from voiceconv.checkpoint import read_config
from voiceconv.demo.calibration import (
    N_QUANTILES,
    SimilarityCalibration,
    mean_direction,
    pair_cosines,
    span_vectors,
)
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="VC model directory")
    parser.add_argument("--data", required=True, help="prepared training corpus (voiceconv prepare)")
    parser.add_argument("--pairs", type=int, default=2000, help="pairs of each kind (same and different speaker)")
    parser.add_argument("--center-spans", type=int, default=600,
                        help="spans whose mean unit vector is the centre (0: raw cosines, a version-1 calibration)")
    parser.add_argument("--quantiles", type=int, default=N_QUANTILES, help="quantiles stored per kind of pair")
    # The recipe's eSpeak voices are synthetic: pairs of them are not the real recordings users bring.
    parser.add_argument("--exclude-speakers", default=r"^syn_", metavar="REGEX",
                        help="regular expression of speakers to leave out (default: the synthetic eSpeak voices)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    corpus = PreparedCorpus(args.data)
    skip = re.compile(args.exclude_speakers) if args.exclude_speakers else None
    speakers = [s for s in corpus.speakers if skip is None or not skip.search(s)]
    model = VCModel.from_pretrained(args.model, device="cpu")

    def embed(mel: np.ndarray) -> np.ndarray:
        """Log-mel ``(n_mels, T)`` -> own speaker vector ``(D,)``, as VoiceConverter.embed_speaker computes it."""
        with torch.inference_mode():
            return model.embed(torch.from_numpy(np.ascontiguousarray(mel))[None])[0].float().numpy()

    center = (mean_direction(span_vectors(corpus, embed, speakers, args.center_spans, seed=args.seed + 1))
              if args.center_spans > 0 else None)
    same, different = pair_cosines(corpus, embed, speakers, args.pairs, seed=args.seed, center=center)
    calibration = SimilarityCalibration.from_cosines(
        same, different, n_quantiles=args.quantiles,
        method=(("centred " if center is not None else "") +
                "cosine of the VC model's own speaker-encoder vectors (VCModel.embed of the log-mel) of two "
                "random 2-6 s spans of prepared training speech (silence-trimmed); same speaker: spans of two "
                "different utterances of one speaker, or two non-overlapping spans of its only utterance; "
                "different speakers: one span each of two speakers; speakers drawn uniformly" +
                (f"; centred: each unit vector minus the mean unit vector of {args.center_spans} other random spans"
                 if center is not None else "")),
        data={"corpus": str(args.data), "speakers": len(speakers), "utterances": len(corpus.indices_for(speakers)),
              "skipped_speakers": args.exclude_speakers, "pairs_per_kind": args.pairs, "seed": args.seed,
              "center_spans": args.center_spans,
              "same_speaker_mean": round(float(np.mean(same)), 6),
              "different_speaker_mean": round(float(np.mean(different)), 6),
              "note": "the model trained on these speakers; a user's unseen voice may score lower with itself"},
        model_file_sha256=read_config(args.model, "vc_model").get("sha256", ""),
        center=center,
    )
    path = calibration.save(args.model)
    median = len(calibration.same) // 2
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s from {len(speakers)} speakers: same-speaker "
          f"cosine median {calibration.same[median]:.3f} (mean {np.mean(same):.3f}), different-speaker median "
          f"{calibration.different[median]:.3f} (mean {np.mean(different):.3f})")


if __name__ == "__main__":
    main()
