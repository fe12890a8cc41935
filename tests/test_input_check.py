"""The input check (voiceconv/convert/input_check.py): out-of-domain clips score high, and the warning reaches
the CLI and the batch status CSV (the demo's is in test_demo.py)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from test_api import save_tiny_model, tiny_model, write_voice
from test_batch import make_pairs
from test_train import short_run

from voiceconv.cli import main
from voiceconv.convert.converter import VoiceConverter
from voiceconv.convert.input_check import InputCheck, calibrate
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A debug-size model trained for 300 steps on the synthetic corpus, and that corpus."""
    corpus, run = short_run(tmp_path_factory.mktemp("input_check"), steps=300, corpus_seed=3)
    return VCModel.from_pretrained(run / "last", device="cpu"), PreparedCorpus(corpus)


def test_calibrated_check_scores_tones_and_music_above_held_out_speech(trained):
    from voiceconv.evaluation import conditions
    from voiceconv.features import MelSpectrogram

    model, corpus = trained
    # Calibrate on all but the last utterance of each speaker; those are the held-out real clips.
    held_out = {max(corpus.indices_for([s])) for s in corpus.speakers}
    calibration = [i for i in range(len(corpus)) if i not in held_out]
    check = calibrate(model, [corpus.mel(i) for i in calibration],
                      [corpus.utterances[i].speaker for i in calibration], bank_size=16)
    real = [check.score(check_features(model, check, torch.from_numpy(corpus.mel(i)))) for i in held_out]
    frontend = MelSpectrogram(model.mel_config)
    rate = model.mel_config.sample_rate
    t = np.arange(int(1.2 * rate)) / rate
    others = {
        "tone": 0.3 * np.sin(2 * np.pi * 440.0 * t),
        "music": 0.2 * conditions.make_noise("music", t.size, rate, seed=1),
    }
    for name, audio in others.items():
        score = check.score(check_features(model, check, frontend(torch.from_numpy(audio.astype(np.float32)))))
        assert score > max(real), (name, score, real)
    assert math.isfinite(check.threshold) and check.threshold > np.median(real)
    # With held-out speakers, every training clip joins the bank and the statistics come from the others.
    held = [i for i in held_out]
    split = calibrate(model, [corpus.mel(i) for i in calibration], [corpus.utterances[i].speaker for i in calibration],
                      bank_size=1000, held_out=([corpus.mel(i) for i in held] * 3,
                                                [corpus.utterances[i].speaker for i in held] * 3))
    assert split.speaker_bank.shape[0] == len(calibration)
    # Held-out clips repeated three times have a narrow spread; the training clips' spread is a floor
    # (checked on the two features that do not depend on the bank's order).
    from voiceconv.convert.input_check import clip_features

    training = torch.tensor([[clip_features(model, torch.from_numpy(corpus.mel(i)), None)[name]
                              for name in ("error", "direction")] for i in calibration], dtype=torch.float64)
    assert torch.all(split.std[:2].double() >= training.std(0) * (1 - 1e-4))
    assert split.threshold > max(split.score(check_features(model, split, torch.from_numpy(corpus.mel(i))))
                                 for i in held) - 1e-6


def check_features(model, check, mel):
    from voiceconv.convert.input_check import clip_features

    return clip_features(model, mel, check.speaker_bank)


def test_calibration_round_trips_through_its_file(tmp_path):
    check = InputCheck(torch.tensor([0.2, -0.01, 0.9]), torch.tensor([0.03, 0.005, 0.02]), 4.5,
                       torch.nn.functional.normalize(torch.randn(7, 16), dim=1), "abc")
    check.save(tmp_path)
    loaded = InputCheck.load(tmp_path)
    assert torch.equal(loaded.mean, check.mean) and torch.equal(loaded.speaker_bank, check.speaker_bank)
    assert loaded.threshold == 4.5 and loaded.model_sha256 == "abc"
    assert InputCheck.load(tmp_path / "absent") is None


def _always_warn(model_dir):
    """A calibration whose threshold every clip exceeds, to test where the warning is shown."""
    model = tiny_model(0)
    bank = torch.nn.functional.normalize(torch.randn(4, model.speaker_dim), dim=1)
    InputCheck(torch.zeros(3), torch.ones(3), -math.inf, bank).save(model_dir)


def test_warning_reaches_the_cli_and_the_batch_status_csv(tmp_path, capsys):
    vc_dir, _ = save_tiny_model(tmp_path / "models")
    models = vc_dir.parent
    source = write_voice(tmp_path / "source.wav", 120.0, 0.8, seed=1)
    ref = write_voice(tmp_path / "ref.wav", 210.0, 0.8, seed=2)
    # No calibration shipped: no warning, no error.
    assert main(["convert", str(source), "--target", str(ref), "-o", str(tmp_path / "a.wav"),
                 "--model", str(models)]) == 0
    assert "warning" not in capsys.readouterr().err
    _always_warn(vc_dir)
    assert VoiceConverter.from_pretrained(models, device="cpu").input_check is not None
    assert main(["convert", str(source), "--target", str(ref), "-o", str(tmp_path / "b.wav"),
                 "--model", str(models)]) == 0
    err = capsys.readouterr().err
    assert f"warning: source {source}" in err and f"warning: reference {ref}" in err
    assert "the result will probably be poor" in err
    assert (tmp_path / "b.wav").is_file()  # a warning, not a refusal

    pairs = make_pairs(tmp_path / "batch", 2)
    assert main(["batch", str(pairs), "--out-dir", str(tmp_path / "out"), "--model", str(models), "--quiet"]) == 0
    assert "2 source(s) sound unlike" in capsys.readouterr().err
    with open(tmp_path / "out" / "batch_status.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert all(row["warning"].startswith("source: ") for row in rows)
