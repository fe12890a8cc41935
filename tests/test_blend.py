"""Voice blending: a weighted mean of speaker vectors is a voice in between (issue 14, item 3)."""

from __future__ import annotations

import math

import pytest
import torch
from test_api import save_tiny_model, tiny_converter, write_voice

from voiceconv.cli import main
from voiceconv.convert.speaker import Speaker
from voiceconv.errors import VoiceconvError


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("blend")
    low = write_voice(root / "low.wav", 95.0, 1.2, seed=1, formants=(600.0, 1000.0, 2400.0))
    high = write_voice(root / "high.wav", 230.0, 1.2, seed=2, formants=(850.0, 1500.0, 3000.0))
    return root, low, high


def test_half_blend_lies_between_the_two_voices_by_the_models_own_encoder(voices):
    _, low, high = voices
    vc = tiny_converter()
    a, b = vc.embed_speaker([str(low)]), vc.embed_speaker([str(high)])
    mix = vc.blend_speakers({a: 0.5, b: 0.5})
    source = write_voice(voices[0] / "source.wav", 140.0, 1.0, seed=3)
    # Convert to each and judge the outputs with the model's own encoder: the blend's output is
    # closer to each endpoint's output than the other endpoint's output is.
    outputs = {name: vc.embed_speaker(vc.convert(str(source), speaker), adapt_steps=0).embedding
               for name, speaker in (("a", a), ("b", b), ("mix", mix))}

    def cosine(x, y):
        return float(torch.nn.functional.cosine_similarity(x, y, dim=0))

    assert cosine(outputs["mix"], outputs["a"]) > cosine(outputs["b"], outputs["a"])
    assert cosine(outputs["mix"], outputs["b"]) > cosine(outputs["a"], outputs["b"])
    # The vector itself is the midpoint, and the pitch statistics sit between the two.
    assert torch.allclose(mix.embedding, (a.embedding + b.embedding) / 2)
    assert torch.allclose(mix.encoder_embedding, (a.encoder_embedding + b.encoder_embedding) / 2)
    assert min(a.log_f0_mean, b.log_f0_mean) < mix.log_f0_mean < max(a.log_f0_mean, b.log_f0_mean)
    assert mix.model_sha256 == vc.model_sha256


@pytest.mark.parametrize("weights, message", [
    ((0.7, 0.7), "sum to 1"),
    ((1.5, -0.5), "zero or positive"),
    ((0.5, math.nan), "zero or positive"),
])
def test_bad_weights_get_a_clear_error(weights, message):
    a, b = Speaker.from_embedding(torch.ones(4)), Speaker.from_embedding(torch.zeros(4))
    with pytest.raises(VoiceconvError, match=message):
        Speaker.blend([(a, weights[0]), (b, weights[1])])
    with pytest.raises(VoiceconvError, match="at least one voice"):
        Speaker.blend([])


def test_embed_blend_cli_writes_a_spk_that_converts(voices, tmp_path, capsys):
    _, low, high = voices
    models = save_tiny_model(tmp_path / "models")[0].parent
    for name, clip in (("a", low), ("b", high)):
        assert main(["embed", str(clip), "-o", str(tmp_path / f"{name}.spk"), "--model", str(models)]) == 0
    assert main(["embed", "--blend", f"{tmp_path / 'a.spk'}=0.25", f"{high}=0.75", "-o", str(tmp_path / "mix.spk"),
                 "--model", str(models)]) == 0
    mix, a = Speaker.load(tmp_path / "mix.spk"), Speaker.load(tmp_path / "a.spk")
    assert mix.dim == a.dim and not torch.allclose(mix.embedding, a.embedding)
    source = write_voice(tmp_path / "s.wav", 140.0, 0.6, seed=4)
    assert main(["convert", str(source), "--speaker", str(tmp_path / "mix.spk"), "-o", str(tmp_path / "o.wav"),
                 "--model", str(models)]) == 0
    capsys.readouterr()
    assert main(["embed", "--blend", f"{tmp_path / 'a.spk'}=0.6", f"{high}=0.6", "-o", str(tmp_path / "bad.spk"),
                 "--model", str(models)]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert main(["embed", "--blend", "a.spk", "-o", str(tmp_path / "bad.spk"), "--model", str(models)]) == 2
    assert "VOICE=WEIGHT" in capsys.readouterr().err
    assert not (tmp_path / "bad.spk").exists()
