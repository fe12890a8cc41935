"""recipes/mini/local/compare_evals.py: paired comparison of two evaluations, overall and by target gender."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "mini" / "local"))

import compare_evals  # noqa: E402  (recipe script, imported from its folder)

COLUMNS = ["source", "target", "output", "sim_output", "sim_source", "accepted_output", "wer_output",
           "f0_gap_output_st"]


def write_eval(folder: Path, rows: list[tuple[str, float, float]]) -> Path:
    """An evaluation folder with ``pairs.csv`` rows ``(tag, similarity, WER)``, tags as ``voiceconv evaluate``
    names its outputs (``p000_FM_...``: a female source to a male target)."""
    folder.mkdir(parents=True)
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for index, (tag, similarity, wer) in enumerate(rows):
            writer.writerow({"source": f"clips/s{index}.wav", "target": f"clips/t{index}a.wav;clips/t{index}b.wav",
                             "output": f"{folder}/converted/p{index:03d}_{tag}_s{index}_to_t{index}.wav",
                             "sim_output": similarity, "sim_source": 0.5, "accepted_output": int(similarity > 0.8),
                             "wer_output": wer, "f0_gap_output_st": -1.0})
    return folder


def test_target_gender_reads_the_pair_tag():
    assert compare_evals.target_gender({"output": "exp/x/converted/p003_FM_1553_to_8312.wav"}) == "M"
    assert compare_evals.target_gender({"output": "exp/x/converted/p004_MF_a_to_b.wav"}) == "F"
    assert compare_evals.target_gender({"output": "exp/x/converted/my_clip.wav"}) is None
    assert compare_evals.target_gender({}) is None


def test_by_target_gender_splits_the_paired_differences(tmp_path, monkeypatch, capsys):
    # Female targets: similarity unchanged, WER up by 0.2 and 0.4; male targets: similarity up by 0.1, WER flat.
    first = write_eval(tmp_path / "first", [("MF", 0.7, 0.1), ("FF", 0.7, 0.2), ("FM", 0.7, 0.3), ("MM", 0.7, 0.3)])
    second = write_eval(tmp_path / "second", [("MF", 0.7, 0.3), ("FF", 0.7, 0.6), ("FM", 0.8, 0.3), ("MM", 0.8, 0.3)])
    monkeypatch.setattr(sys, "argv", ["compare_evals.py", str(first), str(second), "--by-target-gender"])
    compare_evals.main()
    lines = capsys.readouterr().out.splitlines()
    female = next(line for line in lines if line.startswith("F targets (2 pairs)"))
    male = next(line for line in lines if line.startswith("M targets (2 pairs)"))
    assert "sim_output +0.0000 +- 0.0000" in female and "wer_output +0.3000 +- 0.1000" in female
    assert "sim_output +0.1000 +- 0.0000" in male and "wer_output +0.0000 +- 0.0000" in male


def test_pair_sets_are_pooled(tmp_path, monkeypatch, capsys):
    # Set A: similarity +0.1 on both pairs; set B: similarity flat. Pooled over 4 pairs: +0.05 +- 0.0289.
    first_a = write_eval(tmp_path / "a1", [("MF", 0.6, 0.1), ("FM", 0.6, 0.1)])
    second_a = write_eval(tmp_path / "a2", [("MF", 0.7, 0.1), ("FM", 0.7, 0.1)])
    first_b = write_eval(tmp_path / "b1", [("MM", 0.7, 0.2), ("FF", 0.7, 0.2)])
    second_b = write_eval(tmp_path / "b2", [("MM", 0.7, 0.2), ("FF", 0.7, 0.2)])
    monkeypatch.setattr(sys, "argv", ["compare_evals.py", str(first_a), str(second_a),
                                      "--and", str(first_b), str(second_b)])
    compare_evals.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("4 pairs;")
    similarity = next(line for line in lines if line.startswith("Resemblyzer similarity"))
    assert similarity.split()[-4:] == ["0.6500", "0.7000", "+0.0500", "0.0289"]


def test_a_mismatched_pooled_set_is_refused(tmp_path, monkeypatch):
    first = write_eval(tmp_path / "first", [("MF", 0.7, 0.1)])
    second = write_eval(tmp_path / "second", [("MF", 0.7, 0.1)])
    other = write_eval(tmp_path / "other", [("MF", 0.7, 0.1), ("FF", 0.7, 0.1)])
    monkeypatch.setattr(sys, "argv", ["compare_evals.py", str(first), str(second), "--and", str(first), str(other)])
    with pytest.raises(SystemExit, match="other"):
        compare_evals.main()


def test_different_pairs_are_refused(tmp_path, monkeypatch):
    first = write_eval(tmp_path / "first", [("MF", 0.7, 0.1)])
    second = write_eval(tmp_path / "second", [("MF", 0.7, 0.1), ("FF", 0.7, 0.1)])
    monkeypatch.setattr(sys, "argv", ["compare_evals.py", str(first), str(second)])
    with pytest.raises(SystemExit, match="same pairs"):
        compare_evals.main()
