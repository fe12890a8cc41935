"""How over-smoothed are the outputs? The global variance of their log-mels against real speech.

    python recipes/mini/local/global_variance.py exp/mini/eval_v18 exp/mini/eval_v28

A decoder trained with L1 losses predicts the conditional mean of the mel, so its output varies less
along time than real speech does, band by band (the "global variance" of statistical speech
synthesis; Toda et al. 2007). For each ``voiceconv evaluate`` folder given, and for each of its rows
(``pairs_resynthesis.csv``, ``pairs_reconstruction.csv``, ``pairs.csv``), this prints the variance over
time of each log-mel band of each output, as a ratio to the same band's variance in the pair's real
target references (conversions) or in its real source (the two reference rows), in dB, averaged over
the pairs: 0 dB is as lively as real speech, negative is smoother. Frames quieter than 40 dB below an
utterance's loudest are left out, so pauses do not count. No judge is involved: this is a property of
the signal, printed for three frequency ranges. Paths in the CSVs are read from the current folder
(the repository root, where ``voiceconv evaluate`` wrote them).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

RANGES_HZ = ((0.0, 1000.0), (1000.0, 4000.0), (4000.0, 8000.0))


def band_variance(path: Path, frontend) -> np.ndarray:
    """Per-band variance over the speech frames of ``path``'s log-mel, ``(n_mels,)``."""
    import torch

    from voiceconv.audio import load_audio

    audio = load_audio(path, frontend.config.sample_rate)
    log_mel = frontend(torch.as_tensor(audio, dtype=torch.float32)).numpy()  # (n_mels, T)
    # Natural-log magnitude: 40 dB of amplitude is ln(100).
    frame_level = log_mel.max(axis=0)
    speech = frame_level > frame_level.max() - np.log(100.0)
    return log_mel[:, speech].var(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluations", nargs="+", type=Path, help="voiceconv evaluate output folders")
    args = parser.parse_args()

    from voiceconv.features import MelConfig, MelSpectrogram
    from voiceconv.training.channel import mel_band_centres

    config = MelConfig()
    frontend = MelSpectrogram(config)
    centres = mel_band_centres(config).numpy()
    cache: dict[Path, np.ndarray] = {}

    def variance(path: Path) -> np.ndarray:
        if path not in cache:
            cache[path] = band_variance(path, frontend)
        return cache[path]

    header = "  ".join(f"{low / 1000:g}-{high / 1000:g} kHz" for low, high in RANGES_HZ)
    print(f"log-mel variance over time against real speech, dB (0 = as real; negative = smoother)\n"
          f"{'folder':32s} {'row':15s} {header}")
    for folder in args.evaluations:
        for row, table in (("resynthesis", "pairs_resynthesis.csv"), ("reconstruction", "pairs_reconstruction.csv"),
                           ("conversion", "pairs.csv")):
            ratios = []
            rows = list(csv.DictReader(open(folder / table, newline=""))) if (folder / table).is_file() else []
            for pair in rows:
                output = Path(pair["output"])
                if not pair["output"] or not output.is_file():
                    continue
                if row == "conversion":
                    real = np.mean([variance(Path(ref)) for ref in pair["target"].split(";")], axis=0)
                else:
                    real = variance(Path(pair["source"]))
                ratios.append(10.0 * np.log10(variance(output) / np.maximum(real, 1e-8)))
            if not ratios:
                print(f"{str(folder):32s} {row:15s} (no outputs)")
                continue
            mean = np.mean(ratios, axis=0)  # (n_mels,)
            cells = "  ".join(f"{mean[(centres >= low) & (centres < high)].mean():+11.2f}" for low, high in RANGES_HZ)
            print(f"{str(folder):32s} {row:15s} {cells}   ({len(ratios)} pairs)")


if __name__ == "__main__":
    main()
