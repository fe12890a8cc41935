"""Does the demo's similarity figure rank conversions like the independent judge? (issue 16)

    python benchmarks/demo_similarity.py --eval exp/mini/eval_v1 --model voiceconv/pretrained/vc

Reads the per-pair results of a `voiceconv evaluate` run (``pairs.csv``: each converted output, its
target references and the judge's similarity ``sim_output``) and scores the same outputs the ways the
demo can: the independent judge itself (shown when the ``[eval]`` extra is installed), and the model's
own speaker encoder (shown otherwise, placed among real same-speaker pairs by
``similarity_calibration.json``; that placement is monotone, so it ranks like the cosine it is of:
centred on the calibration's centre when it has one, else raw). Prints the Spearman rank correlation
of each with the judge, over the pairs.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", required=True, help="a voiceconv evaluate report folder (with pairs.csv)")
    parser.add_argument("--model", default=None, help="the VC model that made the outputs (default: shipped)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from voiceconv.audio import load_audio
    from voiceconv.convert.converter import VoiceConverter
    from voiceconv.demo.similarity import load_calibration, own_similarity

    torch.set_num_threads(args.threads)
    vc = VoiceConverter.from_pretrained(args.model, vocoder="griffin-lim", device="cpu")
    with open(Path(args.eval) / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    calibration = load_calibration(Path(args.model) if args.model else None)
    centred = calibration is not None and calibration.center is not None
    judge, own, raw = [], [], []
    speakers = {}
    for row in rows:
        refs = tuple(row["target"].split(";"))
        if refs not in speakers:
            speakers[refs] = vc.embed_speaker(list(refs))
        output = load_audio(row["output"], vc.sample_rate)
        raw.append(vc.similarity(output, speakers[refs], source_rate=vc.sample_rate))
        own.append(own_similarity(vc, output, speakers[refs], calibration) if centred else raw[-1])
        judge.append(float(row["sim_output"]))
    print(f"{len(rows)} conversions from {args.eval}")
    print(f"Spearman with the judge: the judge itself (demo with [eval]) 1.000; the model's own encoder "
          f"(demo without [eval], {'centred, as the demo shows it' if centred else 'raw: no centred calibration'}) "
          f"{spearmanr(own, judge).statistic:.3f}; its raw cosine {spearmanr(raw, judge).statistic:.3f}")
    print(f"own-encoder similarity: mean {sum(own) / len(own):.3f}, range {min(own):.3f}-{max(own):.3f}; "
          f"judge: mean {sum(judge) / len(judge):.3f}, range {min(judge):.3f}-{max(judge):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
