"""recipes/mini/local/widen.py: a wider decoder or encoder that computes what the trained one computes."""

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

import widen  # noqa: E402  (recipe script, imported from its folder)


def tiny_model() -> VCModel:
    source = debug_vc_model()
    # Non-trivial mel statistics, so that a surgery that dropped the model's buffers would show.
    source.set_normalization(torch.randn(80), torch.rand(80) + 0.5)
    # A freshly built decoder has AdaIN near plain IN; give every weight a trained-looking spread so that a
    # misplaced row (the AdaIN bias half, an upsampling conv's sub-frames) changes the output.
    with torch.no_grad():
        for part in (source.decoder, source.content_encoder, source.speaker_encoder):
            for parameter in part.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    return source


def test_the_widened_decoder_converts_exactly_as_before():
    source = tiny_model()
    assert any(int(up) > 1 for up in source.config.decoder.upsample)  # the pixel-shuffle layout is exercised
    width = source.config.decoder.channels + 8
    wide = widen.widened_model(source, width).eval()
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
    wide = widen.widened_model(source, old_width + 8).train()
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
    first = widen.widened_model(source, width, seed=1)
    torch.testing.assert_close(torch.rand(3), expected_draw)
    again = widen.widened_model(source, width, seed=1)
    other = widen.widened_model(source, width, seed=2)
    key = "decoder.blocks.0.conv1.conv.weight"
    assert torch.equal(first.state_dict()[key], again.state_dict()[key])
    assert not torch.equal(first.state_dict()[key], other.state_dict()[key])


@pytest.mark.parametrize("part", ["content_encoder", "speaker_encoder"])
def test_a_widened_encoder_converts_exactly_as_before(part):
    source = tiny_model()
    width = getattr(source.config, part).channels + 8
    wide = widen.widened_model(source, width, part=part).eval()
    assert getattr(wide.config, part).channels == width
    assert getattr(wide, part).blocks[0].conv1.conv.weight.shape[:2] == (width, width)
    torch.manual_seed(3)
    mel, reference = torch.randn(2, 80, 45), torch.randn(2, 80, 30)
    with torch.no_grad():
        torch.testing.assert_close(wide.embed(reference), source.embed(reference), atol=1e-5, rtol=0)
        torch.testing.assert_close(wide.encode_content(mel), source.encode_content(mel), atol=1e-5, rtol=0)
        speaker = source.embed(reference)
        torch.testing.assert_close(wide.convert(mel, speaker), source.convert(mel, speaker), atol=1e-5, rtol=0)
    old, new = source.state_dict(), wide.state_dict()
    changed = [name for name in old if not torch.equal(old[name], new[name])]  # a grown tensor is unequal too
    assert changed and all(name.startswith(f"{part}.") for name in changed)


@pytest.mark.parametrize("part", ["content_encoder", "speaker_encoder"])
def test_a_widened_encoders_new_channels_learn_at_once(part):
    source = tiny_model()
    old_width = getattr(source.config, part).channels
    wide = widen.widened_model(source, old_width + 8, part=part).train()
    torch.manual_seed(4)
    mel, target = torch.randn(2, 80, 40), torch.randn(2, 80, 40)
    loss = F.l1_loss(wide.convert(mel, wide.embed(mel)), target)
    loss.backward()
    encoder = getattr(wide, part)
    # The weights out of the new channels start at zero and get a gradient on the first step.
    out_layer = encoder.mean if part == "content_encoder" else encoder.out
    assert out_layer.weight[:, old_width:].abs().sum() == 0
    assert out_layer.weight.grad[:, old_width:].abs().sum() > 0
    assert encoder.blocks[1].conv1.conv.weight.grad[:old_width, old_width:].abs().sum() > 0


def test_refuses_a_width_that_does_not_grow():
    source = tiny_model()
    with pytest.raises(SystemExit, match="must exceed"):
        widen.widened_model(source, source.config.decoder.channels)
    with pytest.raises(SystemExit, match="--part must be one of"):
        widen.widened_model(source, 200, part="vocoder")


@pytest.mark.parametrize("part", ["decoder", "content_encoder", "speaker_encoder"])
def test_main_writes_a_model_that_loads(tmp_path, monkeypatch, capsys, part):
    source = tiny_model()
    source.save_pretrained(tmp_path / "source")
    width = getattr(source.config, part).channels + 4
    monkeypatch.setattr(sys, "argv", ["widen.py", str(tmp_path / "source"), str(tmp_path / "wide"), "--part", part,
                                      "--channels", str(width), "--check-audio", str(REPO / "examples" / "source.wav")])
    widen.main()
    report = json.loads(capsys.readouterr().out)
    assert report["max_difference"] < 1e-4
    assert report["parameters"]["widened"] > report["parameters"]["source"]
    assert getattr(VCModel.from_pretrained(tmp_path / "wide", device="cpu").config, part).channels == width


def test_main_refuses_a_widened_speaker_encoder_that_embeds_differently(tmp_path, monkeypatch):
    tiny_model().save_pretrained(tmp_path / "source")
    real = widen.widened_model

    def broken(*args, **kwargs):  # a widening that let a new channel leak into the speaker vector
        model = real(*args, **kwargs)
        with torch.no_grad():
            model.speaker_encoder.out.weight[:, -1] = 1.0
        return model

    monkeypatch.setattr(widen, "widened_model", broken)
    monkeypatch.setattr(sys, "argv", ["widen.py", str(tmp_path / "source"), str(tmp_path / "wide"), "--part",
                                      "speaker_encoder", "--channels", "40",
                                      "--check-audio", str(REPO / "examples" / "source.wav")])
    with pytest.raises(SystemExit, match="differs from the source"):
        widen.main()
    assert not (tmp_path / "wide").exists()
