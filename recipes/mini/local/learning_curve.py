"""Learning curve: judge similarity, acceptance and WER of `voiceconv evaluate` runs against training steps.

    python recipes/mini/local/learning_curve.py --out docs/learning_curve \
        "shipped v1 (round 1):0:exp/mini/eval_v1" "round 2:1000:exp/mini/curve_eval/step_0001000" ...

Each argument is ``LABEL:STEP:EVAL_DIR`` (a folder with the summary.json that `voiceconv evaluate`
writes). Runs with the same LABEL form one line; STEP counts from that line's warm start, plus
``--offset LABEL=N`` to place a warm-started line after its parent's steps. Writes ``OUT.md`` (a
table) and ``OUT.png`` (similarity and WER against steps), so that the next training step can be
chosen from the curve. ``--previous OUT.md`` keeps the rows of an earlier table, whose evaluation
folders a later session no longer has, and adds the new points after them::

    python recipes/mini/local/learning_curve.py --out docs/learning_curve --previous docs/learning_curve.md \
        "round 4, KL weight 0.05:27500:exp/mini/eval_v3" "round 4, KL weight 0.05:35000:exp/mini/eval_v4"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_point(eval_dir: Path) -> dict:
    summary = json.loads((eval_dir / "summary.json").read_text())
    overall = summary["overall"]
    wer = overall["wer"]["output"] if overall["wer"]["output"] is not None else overall["wer"]["output_vs_source_asr"]
    return {"similarity": overall["similarity"]["output"], "source": overall["similarity"]["source"],
            "accepted": overall["acceptance"]["output"], "wer": wer}


def read_table(path: Path) -> list[tuple[str, int, dict, str]]:
    """``(label, step, point, eval_dir)`` of every row of a table this script wrote."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[1].isdigit():
            continue  # the header, its rule, and the note under the table
        label, step, similarity, accepted, wer, eval_dir = cells
        point = {"similarity": float(similarity), "accepted": float(accepted.rstrip("%")) / 100,
                 "wer": float(wer.rstrip("%")) / 100}
        rows.append((label, int(step), point, eval_dir.strip("`")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("points", nargs="*", help="LABEL:STEP:EVAL_DIR (none: redraw --previous)")
    parser.add_argument("--offset", action="append", default=[], help="LABEL=N: add N to that line's steps")
    parser.add_argument("--out", required=True, help="output path without extension (.md and .png are written)")
    parser.add_argument("--note", default="", help="a sentence printed under the table (data, compute)")
    parser.add_argument("--previous", type=Path, default=None,
                        help="an earlier OUT.md whose rows are kept (its note is kept unless --note is given)")
    parser.add_argument("--add-note", default="", help="a paragraph added after the kept (or given) note")
    args = parser.parse_args()
    offsets = {label: int(n) for label, n in (item.rsplit("=", 1) for item in args.offset)}
    lines: dict[str, list[tuple[int, dict, str]]] = {}
    if args.previous is not None:
        for label, step, point, eval_dir in read_table(args.previous):
            lines.setdefault(label, []).append((step, point, eval_dir))
        if not args.note:
            kept = [line for line in args.previous.read_text().splitlines() if line and not line.startswith("|")]
            args.note = "\n\n".join(kept)
    if args.add_note:
        args.note = "\n\n".join(part for part in (args.note, args.add_note) if part)
    for item in args.points:
        label, step, eval_dir = item.rsplit(":", 2)
        point = read_point(Path(eval_dir))
        lines.setdefault(label, []).append((int(step) + offsets.get(label, 0), point, eval_dir))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = ["| run | total steps | judge similarity | accepted at EER | WER vs source ASR | evaluation |",
            "|---|---|---|---|---|---|"]
    for label, points in lines.items():
        for step, point, eval_dir in sorted(points, key=lambda p: p[0]):
            rows.append(f"| {label} | {step} | {point['similarity']:.3f} | {100 * (point['accepted'] or 0):.1f}% | "
                        f"{100 * point['wer']:.1f}% | `{eval_dir}` |")
    text = "\n".join(rows) + "\n" + (f"\n{args.note}\n" if args.note else "")
    out.with_suffix(".md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One shared legend under the plots: with a dozen runs, legends inside the axes hide the points. The
    # figure grows by the legend's height (two columns of 7-point rows, about 0.14 inch each), so that the
    # plots keep their own 4.2 inches however many runs there are.
    plots_height = 4.2
    legend_rows = (len(lines) + 2) // 2  # the runs plus the target line, in two columns
    legend_height = 0.14 * legend_rows + 0.2
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, plots_height + legend_height))
    # tab10 repeats after ten lines, which made two runs look like one; tab20 gives each its own colour.
    colours = plt.get_cmap("tab20").colors
    for index, (label, points) in enumerate(lines.items()):
        points = sorted(points, key=lambda p: p[0])
        steps = [p[0] for p in points]
        colour = colours[(2 * index) % 20 + (2 * index) // 20 % 2]  # the dark shades first, then the light
        # Past 20 runs the colours come round again, so each round of 20 gets its own marker.
        style = "os^D"[index // 20 % 4] + "-"
        left.plot(steps, [p[1]["similarity"] for p in points], style, label=label, color=colour)
        right.plot(steps, [100 * p[1]["wer"] for p in points], style, label=label, color=colour)
    left.axhline(0.75, color="grey", linestyle=":", label="issue 12 targets (similarity 0.75, WER 35 %)")
    right.axhline(35, color="grey", linestyle=":", label="issue 12 target (35 %)")
    left.set(xlabel="training steps (batch x segment differ by round; see the table)",
             ylabel="Resemblyzer similarity to target", title="Speaker similarity (higher is better)")
    right.set(xlabel="training steps", ylabel="WER vs source ASR (%)", title="Words lost (lower is better)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (plots_height + legend_height), 1, 1))
    fig.savefig(out.with_suffix(".png"), dpi=100)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
