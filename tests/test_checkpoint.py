"""Self-describing model directories and resumable training state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from voiceconv.checkpoint import (
    FORMAT_VERSION,
    atomic_write_text,
    load_pretrained,
    load_train_state,
    read_config,
    rng_state,
    save_pretrained,
    save_train_state,
    set_rng_state,
    sha256_file,
)
from voiceconv.errors import CheckpointError
from voiceconv.features import MelConfig, MelMismatchError


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(80, 16, 3), torch.nn.BatchNorm1d(16), torch.nn.Linear(4, 4))
    model[1].running_mean.uniform_()  # buffers travel too
    return model


def _save(directory, model=None, **kwargs):
    model = model or _model()
    config = {"mel": MelConfig().to_dict(), "channels": 16}
    return save_pretrained(directory, "vc_model", config, model.state_dict(), **kwargs), model


def test_round_trip_is_bit_exact(tmp_path):
    directory, model = _save(tmp_path / "model", extra={"trained_steps": 12})
    meta, state = load_pretrained(directory, "vc_model")
    assert meta["format_version"] == FORMAT_VERSION and meta["kind"] == "vc_model"
    assert meta["config"]["channels"] == 16 and meta["trained_steps"] == 12
    assert MelConfig.from_dict(meta["config"]["mel"]) == MelConfig()
    assert meta["sha256"] == sha256_file(directory / "model.safetensors")
    original = model.state_dict()
    assert set(state) == set(original)
    for name, tensor in original.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
    clone = _model()
    for p in clone.parameters():
        p.data.zero_()
    clone.load_state_dict(state)
    x = torch.randn(2, 80, 6)
    clone.eval(), model.eval()
    assert torch.equal(clone(x), model(x))
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]  # no temp files


def test_shared_and_strided_tensors_are_saved(tmp_path):
    """Tied weights and views (safetensors refuses shared storage) are stored as independent copies."""
    base = torch.arange(12.0).reshape(3, 4)
    state = {"a": base, "tied": base, "view": base.t(), "half": torch.ones(2, dtype=torch.float16)}
    save_pretrained(tmp_path, "vocoder", {}, state)
    _, loaded = load_pretrained(tmp_path, "vocoder")
    assert torch.equal(loaded["view"], base.t()) and loaded["half"].dtype == torch.float16


def test_tampered_weights_are_refused(tmp_path):
    directory, _ = _save(tmp_path)
    weights = directory / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01  # one bit in the last weight
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        load_pretrained(directory)
    message = str(info.value)
    assert "does not match config.json" in message and "corrupt or were modified" in message
    assert "Re-download or re-export" in message and str(weights) in message and "\n" not in message
    # verify=False is the explicit escape hatch (e.g. for a user's own, knowingly edited weights).
    _, state = load_pretrained(directory, verify=False)
    assert state


def test_unreadable_weights_with_matching_hash(tmp_path):
    directory, _ = _save(tmp_path)
    weights = directory / "model.safetensors"
    weights.write_bytes(b"not safetensors at all")
    meta = json.loads((directory / "config.json").read_text())
    meta["sha256"] = sha256_file(weights)
    (directory / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_pretrained(directory)


def test_mismatched_mel_config_is_refused(tmp_path):
    directory, _ = _save(tmp_path)
    vocoder_mel = MelConfig(sample_rate=24000, n_fft=1200, hop_length=300, win_length=1200)
    model_mel = MelConfig.from_dict(read_config(directory)["config"]["mel"])
    with pytest.raises(MelMismatchError) as info:
        model_mel.check_compatible(vocoder_mel, "VC model", "vocoder")
    message = str(info.value)
    assert "sample_rate: VC model=22050 vs vocoder=24000" in message and "hop_length" in message
    assert "Use a vocoder trained on the same mel config" in message


def _edit_meta(directory, **changes):
    meta = json.loads((directory / "config.json").read_text())
    meta.update(changes)
    (directory / "config.json").write_text(json.dumps(meta))


def test_wrong_version_kind_and_missing_files(tmp_path):
    directory, _ = _save(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"holds a 'vc_model' model, expected a 'vocoder' model"):
        load_pretrained(directory, "vocoder")
    _edit_meta(directory, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}; "
                                              "upgrade voiceconv or re-export"):
        load_pretrained(directory)
    _edit_meta(directory, format_version=None)
    with pytest.raises(CheckpointError, match="format version None"):
        read_config(directory)
    (directory / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(directory)
    with pytest.raises(CheckpointError, match="model directory not found"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json; is this a voiceconv model directory"):
        load_pretrained(tmp_path / "empty")
    directory, _ = _save(tmp_path / "m2")
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_pretrained(directory)


def test_extra_cannot_overwrite_reserved_keys(tmp_path):
    with pytest.raises(ValueError, match="reserved keys"):
        _save(tmp_path, extra={"sha256": "0" * 64})


def test_train_state_round_trip_weights_only(tmp_path):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 80, 6)).sum().backward()
    optimizer.step()
    state = {"step": 7, "best_val": 1.5, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": rng_state(), "history": [1.0, 2.0], "name": "run"}
    path = tmp_path / "train_state.pt"
    save_train_state(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["train_state.pt"]
    loaded = load_train_state(path)
    assert loaded["step"] == 7 and loaded["history"] == [1.0, 2.0] and loaded["name"] == "run"
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded["model"][name], tensor)
    restored = torch.optim.AdamW(_model().parameters(), lr=1e-3)
    restored.load_state_dict(loaded["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_train_state_refuses_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_train_state(path)
    assert "this must never run" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="nothing to resume from"):
        load_train_state(tmp_path / "absent.pt")


def _draws():
    return (
        random.random(), random.gauss(0, 1), random.randint(0, 10**9),
        np.random.rand(3).tolist(), np.random.normal(size=1).tolist(), np.random.randint(0, 10**9),
        torch.rand(3).tolist(), torch.randn(2).tolist(),
    )


@pytest.mark.parametrize("gaussian_cached", [False, True])
def test_rng_state_restores_identical_streams(tmp_path, gaussian_cached):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    _draws()
    if gaussian_cached:
        # Python's gauss and NumPy's legacy normal draw pairs and cache the second value;
        # a resume must restore that cache too, or the next normal draw differs.
        random.gauss(0, 1)
        np.random.normal()
    path = tmp_path / "state.pt"
    save_train_state(path, {"rng": rng_state()})
    expected = [_draws() for _ in range(3)]
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # scramble everything
    set_rng_state(load_train_state(path)["rng"])
    assert [_draws() for _ in range(3)] == expected


def test_set_rng_state_reads_the_older_layout():
    """States saved before the Gaussian caches were stored ([version, *internal, flag]) still load."""
    random.seed(5), np.random.seed(5)
    version, internal, _ = random.getstate()
    old = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor([version, *internal, 0], dtype=torch.int64),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    expected = (random.random(), np.random.rand())
    random.seed(0), np.random.seed(0)
    set_rng_state(old)
    assert (random.random(), np.random.rand()) == expected


def test_atomic_write_text_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    atomic_write_text(path, "old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    import voiceconv.atomic

    monkeypatch.setattr(voiceconv.atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # the temporary file was removed
