"""recipes/mini/local/average_models.py: weight interpolation of two models of one lineage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from voiceconv.checkpoint import load_pretrained, save_pretrained

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "mini" / "local"))

import average_models  # noqa: E402  (recipe script, imported from its folder)


def state(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(4, 3, generator=generator), "half": torch.randn(5, generator=generator).half(),
            "count": torch.tensor([7])}


def test_interpolate_is_the_weighted_mean_and_keeps_integer_tensors():
    first, second = state(0), state(1)
    merged = average_models.interpolate(first, second, 0.25)
    torch.testing.assert_close(merged["weight"], 0.75 * first["weight"] + 0.25 * second["weight"])
    assert merged["half"].dtype == torch.float16
    torch.testing.assert_close(merged["half"].float(), 0.75 * first["half"].float() + 0.25 * second["half"].float(),
                               atol=1e-3, rtol=1e-3)
    assert torch.equal(merged["count"], first["count"])
    for weight, source in ((0.0, first), (1.0, second)):
        ends = average_models.interpolate(first, second, weight)
        assert all(torch.equal(ends[name], source[name]) for name in source)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("half"), "different tensors"),
    (lambda s: s.update(weight=torch.zeros(3, 4)), "shapes"),
    (lambda s: s.update(count=torch.tensor([8])), "integer tensors differ"),
])
def test_interpolate_refuses_models_of_different_shape(change, message):
    second = state(1)
    change(second)
    with pytest.raises(ValueError, match=message):
        average_models.interpolate(state(0), second, 0.5)
    with pytest.raises(ValueError, match="weight"):
        average_models.interpolate(state(0), state(1), 1.5)


def test_main_writes_a_loadable_model_and_refuses_mismatched_configs(tmp_path, monkeypatch):
    config = {"mel": {"sample_rate": 22050}, "width": 4}
    save_pretrained(tmp_path / "a", "vc_model", config, state(0), {"released_from": "run_a", "n_speakers": 3})
    save_pretrained(tmp_path / "b", "vc_model", config, state(1))
    monkeypatch.setattr(sys, "argv", ["average_models.py", str(tmp_path / "a"), str(tmp_path / "b"),
                                      str(tmp_path / "mix"), "--weight", "0.5"])
    average_models.main()
    meta, merged = load_pretrained(tmp_path / "mix", "vc_model")  # checks the fresh sha256 too
    torch.testing.assert_close(merged["weight"], 0.5 * (state(0)["weight"] + state(1)["weight"]))
    assert meta["n_speakers"] == 3 and "released_from" not in meta
    assert meta["averaged_from"]["weight_of_second"] == 0.5

    save_pretrained(tmp_path / "c", "vc_model", {**config, "mel": {"sample_rate": 16000}}, state(1))
    monkeypatch.setattr(sys, "argv", ["average_models.py", str(tmp_path / "a"), str(tmp_path / "c"),
                                      str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="different kinds or configs"):
        average_models.main()
    assert not (tmp_path / "x").exists()
    assert json.loads((tmp_path / "mix" / "config.json").read_text())["kind"] == "vc_model"
