"""Speaker similarity by the model's own speaker encoder: source->target, converted->target with 1 and 3 refs.

Usage::

    python benchmarks/speaker_similarity.py --model exp/vc --vocoder exp/vocoder --pairs eval_pairs.csv

``--pairs`` is a CSV with columns ``source,target``; ``target`` lists the target speaker's clips
separated by ``;`` or ``|`` (relative paths are relative to the CSV), as for ``voiceconv batch``.
For each pair, with references ``R``:

- the *judge* vector is the mean over ``R[3:]`` when there are at least 4 clips, so the clips that
  drive the conversion are not also the ones it is scored against; with 3 or fewer the judge is
  all of ``R`` (flagged in the output: the scores are then optimistic);
- ``source``: cosine(source, judge), the baseline before conversion;
- ``1 ref``: cosine(convert(source, R[:1]), judge);
- ``3 refs``: cosine(convert(source, R[:3]), judge) (pairs with fewer than 3 clips are left out).

Cosine of the model's own speaker vectors is a cheap, internal measure (a model can fool its own
encoder); ``voiceconv evaluate`` has the independent judge.
"""

from __future__ import annotations

import argparse
import math
import tempfile


def measure(vc, pairs, pitch="off") -> dict[str, list[float]]:
    """``pairs``: [(source path, [reference paths])]. Returns the per-pair cosines per condition."""
    scores = {"source": [], "1 ref": [], "3 refs": []}
    for source, refs in pairs:
        judge = vc.embed_speaker(refs[3:] if len(refs) >= 4 else refs)
        scores["source"].append(vc.similarity(source, judge))
        for name, used in (("1 ref", refs[:1]), ("3 refs", refs[:3])):
            if name == "3 refs" and len(refs) < 3:
                continue
            converted = vc.convert(source, vc.embed_speaker(used), pitch=pitch)
            scores[name].append(vc.similarity(converted, judge))
    return scores


def read_pair_list(path: str) -> list[tuple]:
    from voiceconv.convert.batch_rows import read_pairs

    with tempfile.TemporaryDirectory() as tmp:
        rows = read_pairs(path, tmp)
    bad = [row for row in rows if row.error]
    for row in bad:
        print(f"# skipping row {row.index}: {row.error}")
    return [(row.source_path, row.target_paths) for row in rows if not row.error]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="VC model directory")
    parser.add_argument("--vocoder", default=None, help="vocoder directory or 'griffin-lim'")
    parser.add_argument("--pairs", required=True, help="CSV with source,target (target clips ';'-separated)")
    parser.add_argument("--pitch", default="off", help="pitch option for the conversions (default off, as voiceconv)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    from voiceconv.convert.converter import VoiceConverter

    vc = VoiceConverter.from_pretrained(args.model, vocoder=args.vocoder, device=args.device)
    pairs = read_pair_list(args.pairs)
    if any(len(refs) < 4 for _, refs in pairs):
        print("# note: pairs with fewer than 4 target clips are judged against their own references (optimistic)")
    scores = measure(vc, pairs, args.pitch)
    print(f"{'condition':>10} {'mean cosine':>12} {'std':>7} {'pairs':>6}")
    for name, values in scores.items():
        if values:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            print(f"{name:>10} {mean:12.4f} {std:7.4f} {len(values):6d}")


if __name__ == "__main__":
    main()
