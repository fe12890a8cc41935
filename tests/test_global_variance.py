"""recipes/mini/local/global_variance.py: how much flatter along time an output's log-mel is than real speech."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "mini" / "local"))

import global_variance  # noqa: E402  (recipe script, imported from its folder)


def speechlike(rng: np.random.Generator, depth: float = 0.9, seconds: float = 2.0, rate: int = 22050) -> np.ndarray:
    """A gliding harmonic tone under a syllable-rate envelope of modulation ``depth``, with a little noise:
    a log-mel that varies along time in every band, the less the smaller ``depth``."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    envelope = (1.0 - depth) + depth * (0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)) ** 2
    phase = 2 * np.pi * np.cumsum(150 + 30 * np.sin(2 * np.pi * 1.5 * t)) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 40))
    return (0.3 * envelope * tone + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_an_output_as_lively_as_the_real_speech_scores_zero_and_a_flattened_one_scores_below(tmp_path, monkeypatch,
                                                                                             capsys):
    monkeypatch.chdir(tmp_path)  # the CSVs hold paths relative to the folder evaluate ran in
    real = {name: speechlike(np.random.default_rng(seed)) for seed, name in enumerate(("source", "target"))}
    flat = {name: speechlike(np.random.default_rng(seed), depth=0.2) for seed, name in enumerate(("source", "target"))}
    for name, audio in real.items():
        sf.write(f"{name}.wav", audio, 22050)
    for folder, outputs in (("same", real), ("flat", flat)):
        Path(folder).mkdir()
        rows = {"pairs.csv": ("target", "conversion.wav"), "pairs_reconstruction.csv": ("source", "reconstruction.wav")}
        for table, (real_name, output) in rows.items():
            sf.write(f"{folder}/{output}", outputs[real_name], 22050)
            with open(f"{folder}/{table}", "w", newline="") as handle:
                writer = csv.DictWriter(handle, ["source", "target", "output"])
                writer.writeheader()
                writer.writerow({"source": "source.wav", "target": "target.wav", "output": f"{folder}/{output}"})
    monkeypatch.setattr(sys, "argv", ["global_variance.py", "same", "flat"])
    global_variance.main()
    lines = {tuple(line.split()[:2]): line.split()[2:5] for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines[("same", "resynthesis")] == ["(no", "outputs)"]
    for row in ("reconstruction", "conversion"):
        assert all(abs(float(cell)) < 1e-6 for cell in lines[("same", row)]), lines
        cells = [float(cell) for cell in lines[("flat", row)]]
        # Flatter in every range; most where the envelope, not the gliding harmonics, makes the variance.
        assert max(cells) < -0.5 and np.mean(cells) < -3.0, cells
