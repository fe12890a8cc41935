"""Input check: does the model's own reconstruction error tell speech from everything else?

    python benchmarks/input_check.py --model voiceconv/pretrained/vc --speech data/mini/unseen.csv

Builds a labelled set of clips (seeded):

- **real**: held-out speech: each file of ``--speech`` (a manifest whose ``path`` column lists
  recordings of speakers the model never trained on) cut into 2.4 s pieces, ``--per-file`` each;
- **out of domain**, as many: white, pink and brown noise; pure tones and sweeps; synthetic music
  (harmonic chords); mains hum with a fan; keyboard clicks; and the real clips reversed, hard-clipped,
  or band-limited to 800 Hz or to 300-1200 Hz.

Prints the ROC AUC of the check's score (real vs out of domain), the false-alarm rate of the warning
on the real clips, the detection rate per out-of-domain kind, and the check's cost per clip.
The model directory must hold an ``input_check.safetensors`` calibration
(``recipes/mini/local/calibrate_input_check.py``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time

import numpy as np

CLIP_SECONDS = 2.4


def real_clips(manifest: str, rate: int, per_file: int) -> list[np.ndarray]:
    from voiceconv.audio import load_audio

    clips = []
    with open(manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            audio = load_audio(row["path"], rate)
            size = int(CLIP_SECONDS * rate)
            clips += [audio[k * size:(k + 1) * size] for k in range(min(per_file, audio.size // size))]
    return clips


def out_of_domain_clips(real: list[np.ndarray], rate: int, count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    from scipy import signal

    from voiceconv.evaluation import conditions

    rng = np.random.default_rng(seed)

    def noise(kind: str, n: int) -> np.ndarray:
        white = rng.standard_normal(n)
        if kind == "white":
            return white
        pole = {"pink": 0.95, "brown": 0.995}[kind]
        return signal.lfilter([1.0], [1.0, -pole], white)

    makers = {
        "white noise": lambda n, a: noise("white", n),
        "pink noise": lambda n, a: noise("pink", n),
        "brown noise": lambda n, a: noise("brown", n),
        "tone": lambda n, a: np.sin(2 * np.pi * rng.uniform(80, 3000) * np.arange(n) / rate),
        "sweep": lambda n, a: signal.chirp(np.arange(n) / rate, rng.uniform(50, 300), n / rate,
                                           rng.uniform(2000, 8000)),
        "music": lambda n, a: conditions.make_noise("music", n, rate, seed=int(rng.integers(1 << 30))),
        "hum and fan": lambda n, a: conditions.make_noise("hum_fan", n, rate, seed=int(rng.integers(1 << 30))),
        "keyboard clicks": lambda n, a: conditions.make_noise("clicks", n, rate, seed=int(rng.integers(1 << 30))),
        "reversed speech": lambda n, a: a[::-1].copy(),
        "clipped speech": lambda n, a: np.clip(a / max(np.abs(a).max(), 1e-6) * 20.0, -1.0, 1.0),
        "speech below 800 Hz": lambda n, a: signal.sosfilt(signal.butter(8, 800, "lowpass", fs=rate, output="sos"), a),
        "speech in 300-1200 Hz": lambda n, a: signal.sosfilt(
            signal.butter(6, [300, 1200], "bandpass", fs=rate, output="sos"), a),
    }
    names = list(makers)
    clips = []
    for k in range(count):
        name = names[k % len(names)]
        n = int(rng.uniform(1.5, 4.0) * rate)
        speech = real[int(rng.integers(len(real)))]
        audio = np.asarray(makers[name](n, speech), dtype=np.float64)
        peak = max(float(np.abs(audio).max()), 1e-9)
        clips.append((name, (audio / peak * rng.uniform(0.1, 0.9)).astype(np.float32)))
    return clips


def roc_auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (the Mann-Whitney form)."""
    negatives, positives = np.asarray(negatives), np.asarray(positives)
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + 0.5 * ties)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="VC model directory (default: the shipped one)")
    parser.add_argument("--speech", required=True, help="manifest CSV (path column) of held-out real speech")
    parser.add_argument("--per-file", type=int, default=6,
                        help="2.4 s clips cut from each real file (6: over 100 real clips from the 20 unseen "
                        "speakers, so the labelled set holds over 200)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from voiceconv.convert.converter import VoiceConverter

    torch.set_num_threads(args.threads)
    vc = VoiceConverter.from_pretrained(args.model, vocoder="griffin-lim", device="cpu")
    if vc.input_check is None:
        print("the model has no input_check.safetensors; run recipes/mini/local/calibrate_input_check.py first")
        return 2
    real = [clip for clip in real_clips(args.speech, vc.sample_rate, args.per_file)
            if np.abs(clip).max() > 1e-3]  # pieces of a recording's trailing silence are not speech
    other = out_of_domain_clips(real, vc.sample_rate, len(real))
    start = time.perf_counter()
    real_reports = [vc.check_input(clip) for clip in real]
    other_reports = [(name, vc.check_input(clip)) for name, clip in other]
    seconds = (time.perf_counter() - start) / (len(real) + len(other))
    real_scores = np.array([report.score for report in real_reports])
    other_scores = np.array([report.score for _, report in other_reports])
    auc = roc_auc(real_scores, other_scores)
    false_alarms = float(np.mean([report.out_of_domain for report in real_reports]))
    print(f"model: {args.model or 'shipped'}; {len(real)} real held-out clips, {len(other)} out-of-domain clips")
    print(f"ROC AUC (real vs out of domain): {auc:.4f}")
    print(f"warning false-alarm rate on real held-out speech: {100 * false_alarms:.1f}% "
          f"(threshold {vc.input_check.threshold:.2f}; real scores median {np.median(real_scores):.2f}, "
          f"max {real_scores.max():.2f})")
    print(f"warning detection rate on out-of-domain clips: "
          f"{100 * np.mean([report.out_of_domain for _, report in other_reports]):.1f}%")
    print("| kind | clips | detected | median score |")
    print("|---|---|---|---|")
    for name in dict.fromkeys(name for name, _ in other_reports):
        scores = [report.score for kind, report in other_reports if kind == name]
        detected = np.mean([report.out_of_domain for kind, report in other_reports if kind == name])
        print(f"| {name} | {len(scores)} | {100 * detected:.0f}% | {np.median(scores):.1f} |")
    print(f"cost: {1000 * seconds:.0f} ms per clip (2 threads: less), clips of 1.5-4 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
