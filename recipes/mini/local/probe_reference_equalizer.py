"""How much of the reference channel's effect could a long-term-spectrum equaliser undo? A judge-free probe.

    python recipes/mini/local/probe_reference_equalizer.py voiceconv/pretrained/vc --data data/mini/prepared \
        --pairs data/mini/eval_pairs.csv --basis 8 --threshold 1.0

Issue 12's cross-domain check loses about a third of the clean similarity gain under another microphone
(``eq``) and about half under the phone line, and the README shows the loss is on the reference side: the
speaker vector takes the reference's channel. A linear channel adds the same curve to every frame of a
log-mel, so it shows in the clip's long-term average spectrum (LTASS). The equaliser tried here estimates
that curve from the reference alone: the clip's level-free LTASS over its speech frames minus the training
corpus's, projected on the first ``--basis`` cosines of the mel axis (a smooth curve, as a microphone is),
each coefficient soft-thresholded by ``--threshold`` times its spread across the training speakers (a
speaker's own spectral shape is a voice cue and must survive), and subtracted from every frame.

For each pair the source is converted with the vector of the clean references (the aim), and of the
references through each condition (``voiceconv.evaluation.conditions``: the ``eq`` and ``phone`` of
``benchmarks/robustness.py``), with and without the equaliser, and with the clean references equalised (what
the equaliser costs a user whose references are fine). Printed: the mean log-mel L1 of each output to the
aim, before the vocoder, and the cosine of each vector to the clean one. No judge is involved; the figure
is a ceiling on what an LTASS equaliser can give, not a measure of conversion quality.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from scipy.fft import idct

from voiceconv.audio import load_audio, trim_silence
from voiceconv.convert.converter import VoiceConverter
from voiceconv.evaluation import conditions
from voiceconv.training.data import PreparedCorpus

SPEECH_RANGE_DB = 30.0  # frames within this many dB of the clip's loud frames (95th percentile) count as speech
POWER_DB_PER_LOG_UNIT = 10.0 / np.log(10.0)  # the mel is the natural log of power: 1 unit = 4.34 dB


def ltass_shape(mel: np.ndarray) -> np.ndarray:
    """``(n_mels, T)`` natural-log mel -> the level-free mean spectrum over its speech frames ``(n_mels,)``."""
    energy = mel.mean(axis=0)
    speech = energy > np.percentile(energy, 95) - SPEECH_RANGE_DB / POWER_DB_PER_LOG_UNIT
    shape = mel[:, speech].mean(axis=1)
    return shape - shape.mean()


class Equalizer:
    """The corpus LTASS and the speakers' spread on a smooth basis; :meth:`__call__` equalises one clip."""

    def __init__(self, speaker_mels: list[np.ndarray], n_basis: int, threshold: float, log_floor: float):
        n_mels = speaker_mels[0].shape[0]
        self.basis = idct(np.eye(n_mels)[:n_basis], axis=1, norm="ortho").T  # (n_mels, K) orthonormal cosines
        shapes = np.stack([ltass_shape(mel) for mel in speaker_mels])  # (S, n_mels)
        self.corpus = shapes.mean(axis=0)
        self.spread = ((shapes - self.corpus) @ self.basis).std(axis=0)  # (K,)
        self.threshold = threshold
        self.log_floor = log_floor

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        coefficients = (ltass_shape(mel) - self.corpus) @ self.basis  # (K,)
        excess = np.sign(coefficients) * np.maximum(np.abs(coefficients) - self.threshold * self.spread, 0.0)
        curve = self.basis @ excess  # (n_mels,)
        live = mel > self.log_floor + 1e-3  # bins at the floor stay there: nothing to equalise
        return np.where(live, np.maximum(mel - curve[:, None], self.log_floor), mel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="VC model directory")
    parser.add_argument("--data", required=True, help="prepared training corpus: the LTASS and speaker spread")
    parser.add_argument("--pairs", required=True, help="pairs CSV (source,target), paths relative to its folder")
    parser.add_argument("--basis", type=int, default=8, help="cosines of the smooth channel curve")
    parser.add_argument("--threshold", type=float, default=1.0,
                        help="soft threshold, in training speakers' standard deviations per cosine")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    converter = VoiceConverter.from_pretrained(args.model)
    model, frontend = converter.model, converter.frontend
    corpus = PreparedCorpus(args.data)
    speaker_mels = [np.concatenate([np.asarray(corpus.mel(i), dtype=np.float32) for i in corpus.indices_for([s])],
                                   axis=1) for s in corpus.speakers]
    equalize = Equalizer(speaker_mels, args.basis, args.threshold, float(np.log(model.mel_config.log_clamp)))
    print(f"{len(speaker_mels)} training speakers; spread per cosine {np.round(equalize.spread, 2).tolist()}")

    def mel_of(path: Path, condition: str) -> np.ndarray:
        audio = load_audio(path, converter.sample_rate)
        if condition != "clean":
            audio = conditions.apply_channel(audio, converter.sample_rate, condition)
        return frontend(torch.from_numpy(trim_silence(audio, converter.sample_rate))).numpy()

    def vector(mels: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([model.embed(torch.from_numpy(m)[None].float())[0] for m in mels]).mean(dim=0)

    root = Path(args.pairs).parent
    rows = list(csv.DictReader(open(args.pairs)))
    variants = ("clean equalised", "eq", "eq equalised", "phone", "phone equalised")
    distance = {name: [] for name in variants}
    cosine = {name: [] for name in variants}
    with torch.inference_mode():
        for row in rows:
            source = torch.from_numpy(mel_of(root / row["source"], "clean"))[None].float()
            refs = [root / p for p in row["target"].split(";")]
            clean = [mel_of(p, "clean") for p in refs]
            aim_vector = vector(clean)
            aim = model.convert(source, aim_vector)
            mels = {"clean equalised": [equalize(m) for m in clean]}
            for condition in ("eq", "phone"):
                through = [mel_of(p, condition) for p in refs]
                mels[condition] = through
                mels[f"{condition} equalised"] = [equalize(m) for m in through]
            for name in variants:
                v = vector(mels[name])
                distance[name].append(float((model.convert(source, v) - aim).abs().mean()))
                cosine[name].append(float(torch.nn.functional.cosine_similarity(v, aim_vector, dim=0)))
    print(f"{len(rows)} pairs; basis {args.basis}, threshold {args.threshold}")
    print(f"{'references':18s} {'output L1 to the clean-reference output':>40s} {'vector cosine to clean':>24s}")
    for name in variants:
        print(f"{name:18s} {np.mean(distance[name]):40.4f} {np.mean(cosine[name]):24.4f}")


if __name__ == "__main__":
    main()
