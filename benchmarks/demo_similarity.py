"""Does the demo's similarity figure rank conversions like the independent judge? (issue 16)

    python benchmarks/demo_similarity.py --eval exp/mini/eval_v1 --model voiceconv/pretrained/vc

Reads the per-pair results of a `voiceconv evaluate` run (``pairs.csv``: each converted output, its
target references and the judge's similarity ``sim_output``) and scores the same outputs the ways the
demo can: the independent judge itself (shown when the ``[eval]`` extra is installed), and the model's
own speaker encoder (shown otherwise, placed among real same-speaker pairs by
``similarity_calibration.json``; that placement is monotone, so it ranks like the cosine it is of:
centred on the calibration's centre when it has one, else raw). Prints the Spearman rank correlation
of each with the judge, over the pairs.

``--features`` also scores the outputs with judge-free acoustic speaker features, the candidates for a
demo figure that needs neither the judge nor the converter's own encoder (which the conversion itself
optimises): the distance between the output's and the references' mean MFCCs (c1-c19, speech frames:
the 60 % loudest), the same with their standard deviations, the level-free long-term average spectrum,
and the median log-F0 (the converter's own F0 tracker, as for pitch "auto"). Each is a higher-is-closer
score, so a useful one has a positive Spearman.

``--critic DIR`` also scores the outputs with a speaker critic (``recipes/mini/local/train_speaker_critic.py``:
a verifier of our own, trained to tell the training speakers apart): the cosine between the output's
embedding and the mean of its references' embeddings.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", required=True, help="a voiceconv evaluate report folder (with pairs.csv)")
    parser.add_argument("--model", default=None, help="the VC model that made the outputs (default: shipped)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", action="store_true", help="also rank by judge-free acoustic features")
    parser.add_argument("--critic", default=None, help="also rank by this speaker critic's cosine (a critic directory)")
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
    if args.features:
        scores = feature_scores(rows)
        for name, values in scores.items():
            usable = sum(1 for value in values if math.isfinite(value))  # NaN: a clip with no voiced frame
            rho = spearmanr(values, judge, nan_policy="omit").statistic
            print(f"Spearman with the judge, judge-free feature {name}: {rho:+.3f} ({usable} of {len(values)} pairs)")
    if args.critic:
        values = critic_scores(rows, args.critic)
        print(f"Spearman with the judge, speaker critic {args.critic}: {spearmanr(values, judge).statistic:+.3f} "
              f"(cosine mean {sum(values) / len(values):.3f}, range {min(values):.3f}-{max(values):.3f})")
    print(f"own-encoder similarity: mean {sum(own) / len(own):.3f}, range {min(own):.3f}-{max(own):.3f}; "
          f"judge: mean {sum(judge) / len(judge):.3f}, range {min(judge):.3f}-{max(judge):.3f}")
    return 0


FEATURE_RATE = 16000  # the judge's rate too


@functools.cache  # each reference clip serves several pairs
def clip_features(path: str) -> dict:
    """Mean and std of MFCC c1-c19 over speech frames, level-free LTAS (dB) and median log-F0 of one clip."""
    import librosa
    import numpy as np

    from voiceconv.audio import load_audio
    from voiceconv.convert.pitch import track_f0

    audio = load_audio(path, FEATURE_RATE)
    mfcc = librosa.feature.mfcc(y=audio, sr=FEATURE_RATE, n_mfcc=20, n_fft=512, hop_length=160, n_mels=40)  # (20, T)
    # c0 is about the frame's mean log-mel level: keep the loudest 60 % (>=, so a constant clip keeps all)
    speech = mfcc[0] >= np.percentile(mfcc[0], 40)
    power = np.abs(librosa.stft(audio, n_fft=512, hop_length=160)) ** 2  # (257, T')
    loud = power.sum(0) >= np.percentile(power.sum(0), 40)
    ltas = 10 * np.log10(power[:, loud].mean(1) + 1e-10)
    f0 = track_f0(audio, FEATURE_RATE)  # the converter's own tracker (pitch "auto"); 0 where unvoiced
    f0 = f0[f0 > 0]
    return {"mean": mfcc[1:, speech].mean(1), "std": mfcc[1:, speech].std(1), "ltas": ltas - ltas.mean(),
            "log_f0": float(np.log(np.median(f0))) if f0.size else float("nan")}


def feature_scores(rows: list[dict]) -> dict[str, list[float]]:
    """Per pair, higher-is-closer scores of the output against the mean of its target references' features."""
    import numpy as np

    scores = {"MFCC mean distance": [], "MFCC mean+std distance": [], "LTAS distance": [], "log-F0 distance": []}
    for row in rows:
        output = clip_features(row["output"])
        refs = [clip_features(path) for path in row["target"].split(";")]
        target = {key: np.nanmean([ref[key] for ref in refs], axis=0) for key in output}
        scores["MFCC mean distance"].append(-float(np.linalg.norm(output["mean"] - target["mean"])))
        scores["MFCC mean+std distance"].append(-float(np.linalg.norm(
            np.concatenate([output["mean"] - target["mean"], output["std"] - target["std"]]))))
        scores["LTAS distance"].append(-float(np.sqrt(np.mean((output["ltas"] - target["ltas"]) ** 2))))
        scores["log-F0 distance"].append(-abs(output["log_f0"] - float(target["log_f0"])))
    return scores


def critic_scores(rows: list[dict], critic_dir: str) -> list[float]:
    """Per pair, the critic's cosine between the output and the normalised mean of its references' embeddings."""
    import torch

    from voiceconv.audio import load_audio
    from voiceconv.features import MelSpectrogram
    from voiceconv.models.speaker_critic import SpeakerCritic

    critic = SpeakerCritic.from_pretrained(critic_dir, device="cpu")
    front_end = MelSpectrogram(critic.config.mel)

    @functools.cache
    def embed(path: str) -> torch.Tensor:
        audio = torch.from_numpy(load_audio(path, critic.config.mel.sample_rate)).float()
        with torch.no_grad():
            return critic.embed(front_end(audio[None]))[0]  # (D,)

    scores = []
    for row in rows:
        target = torch.stack([embed(path) for path in row["target"].split(";")]).mean(0)
        scores.append(float(embed(row["output"]) @ (target / target.norm())))
    return scores


if __name__ == "__main__":
    sys.exit(main())
