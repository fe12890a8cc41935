"""Input check: is a source or reference the kind of speech the model knows? (anomaly detection)

An auto-encoder rebuilds what it was trained on well and everything else badly, so the model's own
reconstruction error says when an input is out of its domain. Three numbers, all from the VC model
itself, for one clip's log-mel:

- ``error``: mean absolute error, in normalised log-mel units, of the self-reconstruction
  ``convert(mel, embed(mel))``: high for noise, tones, music, distortion and band-limited audio;
- ``direction``: that error minus the error of rebuilding the clip played backwards. Speech
  unfolds one way in time (onsets, decays, coarticulation) and the model has learned it: it
  rebuilds real speech better forwards (negative), reversed speech better backwards (positive),
  and non-speech about equally;
- ``speaker``: the mean cosine of the clip's speaker vector to its 5 nearest training utterances,
  low when the clip sounds like no voice the model was trained on.

Each is turned into a z-score against the same numbers on training utterances (the calibration,
stored beside the model as ``input_check.safetensors``), and the score is
``z_error + z_direction - z_speaker``. Above the calibrated threshold the clip gets a warning; it
is never refused. The cost is two encoder-decoder passes and one speaker-encoder pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voiceconv.atomic import atomic_path
from voiceconv.errors import CheckpointError

FILE_NAME = "input_check.safetensors"
FORMAT = "voiceconv-input-check"
FORMAT_VERSION = 1
FEATURES = ("error", "direction", "speaker")
NEIGHBOURS = 5  # nearest training utterances for the speaker feature
MAX_FRAMES = 2000  # longer clips are scored on their first ~23 s (enough for a verdict, bounded cost)
FLOOR_BELOW_PEAK = 8.0  # frames whose loudest band is this far (natural log, ~35 dB) below the clip's are pauses


@dataclass
class InputReport:
    """What the check says about one clip."""

    score: float  # z_error + z_direction - z_speaker; higher = less like the training speech
    threshold: float
    features: dict[str, float]
    warning: str | None  # one sentence for the user, or None when the clip looks like speech

    @property
    def out_of_domain(self) -> bool:
        return self.warning is not None


def clip_features(model, mel: torch.Tensor, speaker_bank: torch.Tensor | None,
                  exclude: torch.Tensor | None = None) -> dict[str, float]:
    """The three raw features of one log-mel ``mel (n_mels, T)`` (see the module docstring).

    ``exclude (N,)`` (bool) leaves bank entries out of the speaker feature (calibration: the clip's
    own speaker, since users' voices are not in the bank either).
    """
    mel = mel[..., :MAX_FRAMES].float()
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)  # (1, n_mels, T)
    mel = mel.to(next(model.parameters()).device)
    # Pauses are left out of the error: every model rebuilds silence, which would dilute the score.
    loudest = mel[0].max(dim=0).values  # (T,)
    active = loudest > loudest.max() - FLOOR_BELOW_PEAK
    with torch.inference_mode():
        vector = model.embed(mel)
        forward = (model.normalize(model.convert(mel, vector)) - model.normalize(mel)).abs().mean(1)[0]  # (T,)
        backward_mel = mel.flip(-1)  # the clip played backwards
        backward = (model.normalize(model.convert(backward_mel, model.embed(backward_mel)))
                    - model.normalize(backward_mel)).abs().mean(1)[0].flip(-1)  # (T,) in forward frame order
        error = float(forward[active].mean())
        features = {"error": error, "direction": error - float(backward[active].mean()), "speaker": math.nan}
        if speaker_bank is not None and len(speaker_bank):
            unit = torch.nn.functional.normalize(vector.float().cpu(), dim=1)  # (1, D)
            cosines = (unit @ speaker_bank.T)[0]  # (N,)
            if exclude is not None:
                cosines = cosines[~exclude]
            features["speaker"] = float(cosines.topk(min(NEIGHBOURS, cosines.numel())).values.mean())
    return features


@dataclass
class InputCheck:
    """Calibration of the check for one model: feature means and stds on training speech, a threshold."""

    mean: torch.Tensor  # (3,) in FEATURES order
    std: torch.Tensor  # (3,)
    threshold: float
    speaker_bank: torch.Tensor  # (N, D) unit speaker vectors of training utterances
    model_sha256: str = ""

    def score(self, features: dict[str, float]) -> float:
        z = [(features[name] - float(self.mean[k])) / float(self.std[k]) for k, name in enumerate(FEATURES)]
        return z[0] + z[1] - z[2]

    def check(self, model, mel: torch.Tensor) -> InputReport:
        features = clip_features(model, mel, self.speaker_bank)
        score = self.score(features)
        return InputReport(score, self.threshold, features, warning_text(features, self) if score > self.threshold
                           else None)

    # ---- files ----------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(directory) / FILE_NAME
        metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "threshold": repr(self.threshold),
                    "features": ",".join(FEATURES), "model_sha256": self.model_sha256}
        tensors = {"mean": self.mean.float().contiguous(), "std": self.std.float().contiguous(),
                   "speaker_bank": self.speaker_bank.float().contiguous()}
        with atomic_path(path) as temp:
            save_file(tensors, str(temp), metadata=metadata)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> InputCheck | None:
        """The calibration in ``directory``, or None when the model has none."""
        from safetensors import safe_open

        path = Path(directory) / FILE_NAME
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except Exception as error:
            raise CheckpointError(f"{path}: cannot read the input-check calibration ({error}); re-run the "
                                  "calibration or delete the file") from None
        if metadata.get("format") != FORMAT or metadata.get("format_version") != str(FORMAT_VERSION):
            raise CheckpointError(f"{path}: not a version-{FORMAT_VERSION} voiceconv input-check file")
        return cls(tensors["mean"], tensors["std"], float(metadata["threshold"]), tensors["speaker_bank"],
                   metadata.get("model_sha256", ""))


def warning_text(features: dict[str, float], check: InputCheck) -> str:
    """One sentence: what seems wrong and what to do."""
    z = {name: (features[name] - float(check.mean[k])) / float(check.std[k]) for k, name in enumerate(FEATURES)}
    if z["direction"] > 3.0 and z["direction"] >= z["error"]:
        what = "it does not unfold like speech (is it reversed, or not speech at all?)"
    elif z["speaker"] < -3.0 and z["error"] > 3.0:
        what = "it does not sound like speech (noise, music or tones?)"
    else:
        what = "it sounds unlike the speech the model was trained on (noise, music, distortion or a very " \
               "narrow-band recording?)"
    return f"{what}; the result will probably be poor: use a clean recording of one person speaking"


def calibrate(model, mels: list[np.ndarray], speakers: list[str], bank_size: int = 300,
              false_alarm: float = 0.005, seed: int = 0,
              held_out: tuple[list[np.ndarray], list[str]] | None = None, spread_clips: int = 300) -> InputCheck:
    """Calibrate on training-speech log-mels ``[(n_mels, T), ...]`` (at least 20) of ``speakers``.

    A random ``bank_size`` of them form the speaker bank; the features of the others give the means,
    standard deviations and the threshold: the ``1 - false_alarm`` quantile of their scores plus a
    margin of one standard deviation of the scores, since users' speech is less like the training
    data than the training data is. Each clip's speaker feature leaves its own speaker's bank
    entries out, as a user's voice is not in the bank.

    ``held_out``: ``(mels, speakers)`` of speakers the model was *not* trained on (e.g. the
    trainer's validation speakers). When given, all of ``mels`` form the bank and the statistics
    and threshold come from the held-out clips instead: a model rebuilds its own training
    utterances better than any new voice, so training clips make the threshold too strict. Each
    feature's standard deviation is then at least its spread over ``spread_clips`` training clips
    (many more voices than a few held-out speakers give).
    """
    if len(mels) < 20 or len(speakers) != len(mels):
        raise ValueError(f"calibration needs at least 20 training utterances with a speaker each, got {len(mels)} "
                         f"clips and {len(speakers)} speaker labels")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(mels))
    n_bank = min(bank_size, len(mels) if held_out is not None else len(mels) // 2)
    device = next(model.parameters()).device
    with torch.inference_mode():
        vectors = [model.embed(torch.as_tensor(mels[i][:, :MAX_FRAMES])[None].float().to(device))[0].float().cpu()
                   for i in order[:n_bank]]
    bank = torch.nn.functional.normalize(torch.stack(vectors), dim=1)  # (N, D)
    bank_speakers = np.array([speakers[i] for i in order[:n_bank]])
    statistics_mels, statistics_speakers = (held_out if held_out is not None else
                                            ([mels[i] for i in order[n_bank:]], [speakers[i] for i in order[n_bank:]]))
    rows = [clip_features(model, torch.as_tensor(mel), bank, torch.from_numpy(bank_speakers == speaker))
            for mel, speaker in zip(statistics_mels, statistics_speakers)]
    table = torch.tensor([[row[name] for name in FEATURES] for row in rows], dtype=torch.float64)
    mean, std = table.mean(0), table.std(0).clamp_min(1e-6)
    if held_out is not None:
        # A handful of held-out speakers place the mean (a new voice is rebuilt worse than a training
        # voice) but not the spread across voices: with 5 of them, unseen speakers' clips exceeded the
        # threshold 6 % of the time. The spread of the training speakers' clips (hundreds of voices)
        # is a floor on each feature's standard deviation.
        spread = [clip_features(model, torch.as_tensor(mels[i]), bank,
                                torch.from_numpy(bank_speakers == speakers[i])) for i in order[:spread_clips]]
        spread_table = torch.tensor([[row[name] for name in FEATURES] for row in spread], dtype=torch.float64)
        if len(spread) > 1:
            std = torch.maximum(std, spread_table.std(0))
    check = InputCheck(mean.float(), std.float(), 0.0, bank)
    scores = np.array([check.score(row) for row in rows])
    check.threshold = float(np.quantile(scores, 1.0 - false_alarm) + scores.std())
    return check
