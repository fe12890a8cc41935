"""Compare two `voiceconv evaluate` runs on the same pairs: is a retrained model the same quality?

    python recipes/mini/local/compare_evals.py exp/mini/shipped/eval exp/mini_rerun/shipped/eval

Reads each run's ``pairs.csv`` (one row per conversion pair) and prints, for the metrics the model card
reports, both runs' means and the paired difference (second minus first) with its standard error
over pairs. The verdict "within noise" means the paired difference of the mean speaker similarity is
inside two standard errors. Both runs must have evaluated the same pairs (same source and target).

Several pair sets can be pooled into one paired comparison (each set's two runs must match):

    python recipes/mini/local/compare_evals.py exp/mini/eval_v18 exp/mini/eval_v29 \
        --and exp/mini/confirm_v18 exp/mini/confirm_v29 --and exp/mini/third_v18 exp/mini/third_v29

A model chosen on one pair set looks better on it than it is (its later rivals regress to the mean
there), so release rules since round 29 are judged on the pooled pairs.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

# (column in pairs.csv, label, higher is better)
METRICS = [
    ("sim_output", "Resemblyzer similarity to the target", True),
    ("accepted_output", "accepted as the target at the EER threshold", True),
    ("wer_output", "per-pair WER against the source's own ASR", False),
    ("f0_gap_output_st", "|log-F0 gap| to the target (semitones)", False),
]


def read_pairs(eval_dir: Path) -> list[dict[str, str]]:
    path = eval_dir / "pairs.csv"
    if not path.is_file():
        sys.exit(f"{path} not found: pass the folder written by `voiceconv evaluate --out`")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def values(rows: list[dict[str, str]], column: str) -> list[float | None]:
    out = []
    for row in rows:
        text = row.get(column, "")
        value = float(text) if text not in ("", None) else None
        if value is not None and column == "f0_gap_output_st":
            value = abs(value)
        out.append(value)
    return out


def pair_key(row: dict[str, str]) -> tuple[str, ...]:
    """The pair's source and reference file names (runs may have used relative or absolute paths)."""
    return tuple(Path(path).name for path in [row["source"], *row["target"].split(";")])


def mean_and_error(numbers: list[float]) -> tuple[float, float]:
    n = len(numbers)
    mean = sum(numbers) / n
    variance = sum((x - mean) ** 2 for x in numbers) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(variance / n)


def target_gender(row: dict[str, str]) -> str | None:
    """"F" or "M" from the output name's pair tag (``p000_FM_...``: source F, target M), else None."""
    parts = Path(row.get("output", "")).name.split("_")
    tag = parts[1] if len(parts) > 2 else ""
    return tag[1] if len(tag) == 2 and set(tag) <= {"F", "M"} else None


def by_target_gender(first: list[dict[str, str]], second: list[dict[str, str]]) -> None:
    for gender in ("F", "M"):
        rows = [(a, b) for a, b in zip(first, second) if target_gender(a) == gender]
        if not rows:
            continue
        cells = []
        for column in ("sim_output", "wer_output"):
            pairs = [(values([a], column)[0], values([b], column)[0]) for a, b in rows]
            diff, error = mean_and_error([y - x for x, y in pairs if x is not None and y is not None])
            cells.append(f"{column} {diff:+.4f} +- {error:.4f}")
        print(f"{gender} targets ({len(rows)} pairs): " + ", ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="evaluation folder of the reference run")
    parser.add_argument("second", type=Path, help="evaluation folder of the rerun")
    parser.add_argument("--by-target-gender", action="store_true",
                        help="also print the paired differences of similarity and WER for female and male targets "
                             "(from the pair tag in the output names that `voiceconv evaluate` writes, e.g. "
                             "p000_FM_...: a female source to a male target)")
    parser.add_argument("--and", dest="more", nargs=2, action="append", type=Path, default=[],
                        metavar=("FIRST", "SECOND"),
                        help="another pair set's two evaluation folders, pooled with the first (repeatable)")
    args = parser.parse_args()
    sets = [(args.first, args.second), *args.more]
    first, second = [], []
    for first_dir, second_dir in sets:
        rows_first, rows_second = read_pairs(first_dir), read_pairs(second_dir)
        if [pair_key(row) for row in rows_first] != [pair_key(row) for row in rows_second]:
            sys.exit(f"the two evaluations {first_dir} and {second_dir} did not score the same pairs in the same order")
        first += rows_first
        second += rows_second
    sim_first, sim_source = values(first, "sim_output"), values(first, "sim_source")
    sim_second = values(second, "sim_output")
    closer = [sum(o > s for o, s in zip(sims, sim_source)) for sims in (sim_first, sim_second)]
    print(f"{len(first)} pairs; " + "; ".join(f"{a} vs {b}" for a, b in sets))
    print(f"{'metric':<46}{'first':>9}{'second':>9}{'paired diff':>14}{'+- s.e.':>9}")
    verdict = None
    for column, label, _ in METRICS:
        a, b = values(first, column), values(second, column)
        both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        if not both:
            continue
        mean_a = sum(x for x, _ in both) / len(both)
        mean_b = sum(y for _, y in both) / len(both)
        diff, error = mean_and_error([y - x for x, y in both])
        print(f"{label:<46}{mean_a:>9.4f}{mean_b:>9.4f}{diff:>+14.4f}{error:>9.4f}")
        if column == "sim_output":
            verdict = abs(diff) <= 2 * error
    print(f"{'pairs closer to the target than the source':<46}{closer[0]:>9d}{closer[1]:>9d}")
    if args.by_target_gender:
        by_target_gender(first, second)
    if verdict is not None:
        print("speaker similarity: " + ("same within noise (|paired diff| <= 2 s.e.)" if verdict
                                        else "DIFFERENT (|paired diff| > 2 s.e.)"))


if __name__ == "__main__":
    main()
