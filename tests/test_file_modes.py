"""Every file voiceconv writes gets the mode a plain open() would give it under the current umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_api import save_tiny_model, tiny_model, write_voice
from test_batch import make_pairs

from voiceconv.atomic import atomic_path, default_file_mode
from voiceconv.cli import main


@pytest.fixture()
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert default_file_mode() == expected
    models = save_tiny_model(tmp_path / "models")[0].parent
    source = write_voice(tmp_path / "source.wav", 120.0, 0.6, seed=1)
    ref = write_voice(tmp_path / "ref.wav", 210.0, 0.8, seed=2, formants=(800.0, 1400.0, 2900.0))

    assert main(["convert", str(source), "--target", str(ref), "-o", str(tmp_path / "out.wav"),
                 "--model", str(models)]) == 0
    assert main(["embed", str(ref), "-o", str(tmp_path / "voice.spk"), "--model", str(models)]) == 0
    pairs = make_pairs(tmp_path / "batch", 2)
    assert main(["batch", str(pairs), "--out-dir", str(tmp_path / "batch_out"), "--model", str(models),
                 "--quiet"]) == 0
    tiny_model(0).save_pretrained(tmp_path / "checkpoint")

    written = [tmp_path / "out.wav", tmp_path / "voice.spk", tmp_path / "checkpoint" / "model.safetensors",
               tmp_path / "checkpoint" / "config.json", tmp_path / "batch_out" / "batch_status.csv",
               *sorted((tmp_path / "batch_out").glob("*.wav"))]
    assert len(written) == 7
    for path in written:
        assert mode(path) == expected, (path, oct(mode(path)))


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


# ---- a bad source fails before any target is embedded ---------------------------------------------


def test_convert_checks_the_source_before_embedding_the_target(tmp_path, monkeypatch, capsys):
    from voiceconv.convert.converter import VoiceConverter

    models = save_tiny_model(tmp_path / "models")[0].parent
    ref = write_voice(tmp_path / "ref.wav", 210.0, 0.8, seed=2)
    good = write_voice(tmp_path / "good.wav", 120.0, 0.6, seed=1)
    embedded = []
    real = VoiceConverter.embed_speaker
    monkeypatch.setattr(VoiceConverter, "embed_speaker",
                        lambda self, *a, **k: embedded.append(a) or real(self, *a, **k))

    code = main(["convert", str(good), str(tmp_path / "missing.wav"), "--target", str(ref), "-o",
                 str(tmp_path / "out"), "--model", str(models)])
    assert code == 2
    assert "missing.wav" in capsys.readouterr().err
    assert embedded == [] and not (tmp_path / "out").exists()
    # A silent source, too.
    silent = tmp_path / "silent.wav"
    import numpy as np
    import soundfile as sf

    sf.write(silent, np.zeros(22050, np.float32), 22050)
    assert main(["convert", str(silent), "--target", str(ref), "-o", str(tmp_path / "o.wav"),
                 "--model", str(models)]) == 2
    assert "silent" in capsys.readouterr().err and embedded == []


def test_batch_rows_with_a_bad_source_embed_nothing(tmp_path, monkeypatch):
    import csv

    from voiceconv.convert.batch import run_batch
    from voiceconv.convert.converter import VoiceConverter

    models = save_tiny_model(tmp_path / "models")[0].parent
    pairs = make_pairs(tmp_path / "batch", 2)
    rows = list(csv.reader(open(pairs)))
    # Row 1 gets a missing source and a target of its own, which must then never be embedded.
    write_voice(tmp_path / "batch" / "refs" / "lonely.wav", 180.0, 0.8, seed=9)
    rows[2] = ["src/absent.wav", "refs/lonely.wav"]
    with open(pairs, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    embedded = []
    real = VoiceConverter.embed_speaker
    monkeypatch.setattr(VoiceConverter, "embed_speaker",
                        lambda self, refs, *a, **k: embedded.append([Path(r).name for r in refs]) or
                        real(self, refs, *a, **k))
    summary = run_batch(pairs, tmp_path / "out", model=str(models), progress=False, report=lambda line: None)
    statuses = [result.status for result in summary.results]
    assert statuses == ["ok", "failed"]
    assert "absent.wav" in summary.results[1].reason
    assert all("lonely.wav" not in refs for refs in embedded) and len(embedded) == 1
