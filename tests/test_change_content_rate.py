"""recipes/mini/local/change_content_rate.py: a finer content-code rate, every weight kept or averaged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import debug_vc_model

from voiceconv.models import VCModel
from voiceconv.models.layers import pixel_shuffle_1d

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "mini" / "local"))

import change_content_rate  # noqa: E402  (recipe script, imported from its folder)


def test_the_changed_model_runs_at_the_new_rate_and_keeps_every_other_weight():
    source = debug_vc_model()
    changed = change_content_rate.changed_model(source, [1, 2, 1, 2, 1, 1], [1, 1, 2, 1, 2, 1]).eval()
    assert changed.config.content_encoder.total_stride == 4
    mel = torch.randn(2, 80, 37)
    assert changed.encode_content(mel).shape[-1] == 10  # ceil(37 / 4); the source gives ceil(37 / 8) = 5
    assert source.encode_content(mel).shape[-1] == 5
    assert changed.convert(mel, changed.embed(mel)).shape == mel.shape

    old, new = source.state_dict(), changed.state_dict()
    assert old.keys() == new.keys()
    dropped = [i for i, (old, new) in enumerate(zip(source.config.decoder.upsample, [1, 1, 2, 1, 2, 1])) if old != new]
    assert dropped == [0]
    averaged = {f"decoder.blocks.{i}.conv2.conv.{name}" for i in dropped for name in ("weight", "bias")}
    for name in old.keys() - averaged:
        assert torch.equal(old[name], new[name]), name
    for name in averaged:
        assert new[name].shape[0] * 2 == old[name].shape[0]


def test_the_block_that_stops_upsampling_writes_the_mean_of_its_old_sub_frames():
    source = debug_vc_model()
    changed = change_content_rate.changed_model(source, [1, 2, 1, 2, 1, 1], [1, 1, 2, 1, 2, 1])
    x = torch.randn(2, 16, 9)  # (B, C, T) at the decoder's width
    with torch.no_grad():
        before = pixel_shuffle_1d(source.decoder.blocks[0].conv2(x), 2)  # (B, C, 2T)
        after = changed.decoder.blocks[0].conv2(x)  # (B, C, T)
    # (B, C, 2T) -> (B, C, T, 2): the two sub-frames that frame t became, averaged
    torch.testing.assert_close(after, before.reshape(2, 16, 9, 2).mean(dim=-1))


@pytest.mark.parametrize("subsample, upsample, message", [
    ([1, 2, 1, 2, 1], [2, 1, 2, 1, 2, 1], "one factor per block"),
    ([1, 2, 1, 2, 1, 2], [2, 1, 2, 1, 4, 1], "decoder factor can only stay or drop to 1"),
    ([2, 2, 1, 2, 1, 1], [2, 1, 2, 1, 2, 1], "content-encoder stride can only stay or drop to 1"),
])
def test_refuses_what_it_cannot_map(subsample, upsample, message):
    with pytest.raises(SystemExit, match=message):
        change_content_rate.changed_model(debug_vc_model(), subsample, upsample)


def test_main_writes_a_model_that_loads(tmp_path, monkeypatch, capsys):
    debug_vc_model().save_pretrained(tmp_path / "source")
    monkeypatch.setattr(sys, "argv", ["change_content_rate.py", str(tmp_path / "source"), str(tmp_path / "fine"),
                                      "--subsample", "1", "2", "1", "2", "1", "1",
                                      "--upsample", "1", "1", "2", "1", "2", "1",
                                      "--check-audio", str(REPO / "examples" / "source.wav")])
    change_content_rate.main()
    loaded = VCModel.from_pretrained(tmp_path / "fine", device="cpu")
    assert list(loaded.config.content_encoder.subsample) == [1, 2, 1, 2, 1, 1]
    assert "reconstruction_l1" in capsys.readouterr().out
