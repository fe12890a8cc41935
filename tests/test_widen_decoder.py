"""recipes/mini/local/widen_decoder.py: a wider decoder that computes what the trained one computes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import debug_vc_model

from voiceconv.models import VCModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "mini" / "local"))

import widen_decoder  # noqa: E402  (recipe script, imported from its folder)


def tiny_model() -> VCModel:
    source = debug_vc_model()
    # Non-trivial mel statistics, so that a surgery that dropped the model's buffers would show.
    source.set_normalization(torch.randn(80), torch.rand(80) + 0.5)
    # A freshly built decoder has AdaIN near plain IN; give every weight a trained-looking spread so that a
    # misplaced row (the AdaIN bias half, an upsampling conv's sub-frames) changes the output.
    with torch.no_grad():
        for parameter in source.decoder.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return source


def test_the_widened_decoder_converts_exactly_as_before():
    source = tiny_model()
    assert any(int(up) > 1 for up in source.config.decoder.upsample)  # the pixel-shuffle layout is exercised
    width = source.config.decoder.channels + 8
    wide = widen_decoder.widened_model(source, width).eval()
    assert wide.config.decoder.channels == width
    assert wide.decoder.out.weight.shape[1] == width
    torch.manual_seed(1)
    mel, reference = torch.randn(2, 80, 45), torch.randn(2, 80, 30)
    with torch.no_grad():
        speaker = source.embed(reference)
        torch.testing.assert_close(wide.convert(mel, speaker), source.convert(mel, speaker), atol=1e-5, rtol=0)
    old, new = source.state_dict(), wide.state_dict()
    for name in old:
        if not name.startswith("decoder."):
            assert torch.equal(old[name], new[name]), name


def test_the_new_channels_learn_at_once():
    source = tiny_model()
    old_width = source.config.decoder.channels
    wide = widen_decoder.widened_model(source, old_width + 8).train()
    torch.manual_seed(2)
    mel, target = torch.randn(2, 80, 40), torch.randn(2, 80, 40)
    # Their incoming weights are fresh, not zero, so they carry activations ...
    assert wide.decoder.blocks[0].conv1.conv.weight[old_width:].abs().sum() > 0
    loss = F.l1_loss(wide.convert(mel, wide.embed(mel)), target)
    loss.backward()
    # ... and the zeroed weights out of them get a gradient on the first step, so training can use them.
    out_gradient = wide.decoder.out.weight.grad[:, old_width:]
    conv_gradient = wide.decoder.blocks[1].conv1.conv.weight.grad[:old_width, old_width:]
    assert out_gradient.abs().sum() > 0 and conv_gradient.abs().sum() > 0


def test_the_seed_fixes_the_new_channels_and_leaves_the_callers_random_state_alone():
    source = tiny_model()
    width = source.config.decoder.channels + 8
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    first = widen_decoder.widened_model(source, width, seed=1)
    torch.testing.assert_close(torch.rand(3), expected_draw)
    again = widen_decoder.widened_model(source, width, seed=1)
    other = widen_decoder.widened_model(source, width, seed=2)
    key = "decoder.blocks.0.conv1.conv.weight"
    assert torch.equal(first.state_dict()[key], again.state_dict()[key])
    assert not torch.equal(first.state_dict()[key], other.state_dict()[key])


def test_refuses_a_width_that_does_not_grow():
    source = tiny_model()
    with pytest.raises(SystemExit, match="must exceed"):
        widen_decoder.widened_model(source, source.config.decoder.channels)


def test_main_writes_a_model_that_loads(tmp_path, monkeypatch, capsys):
    tiny_model().save_pretrained(tmp_path / "source")
    monkeypatch.setattr(sys, "argv", ["widen_decoder.py", str(tmp_path / "source"), str(tmp_path / "wide"),
                                      "--channels", "20", "--check-audio", str(REPO / "examples" / "source.wav")])
    widen_decoder.main()
    report = json.loads(capsys.readouterr().out)
    assert report["max_difference"] < 1e-4
    assert report["parameters"]["widened"] > report["parameters"]["source"]
    assert VCModel.from_pretrained(tmp_path / "wide", device="cpu").config.decoder.channels == 20
