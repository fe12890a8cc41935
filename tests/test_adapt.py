"""Test-time speaker adaptation (voiceconv/convert/adapt.py): the speaker vector is fitted to the
reference clips by the auto-encoder's own reconstruction loss, with the model frozen."""

from __future__ import annotations

import pytest
import torch
from test_api import save_tiny_model, tiny_converter, tiny_model, write_voice

from voiceconv.cli import main
from voiceconv.convert.adapt import adapt_speaker
from voiceconv.convert.speaker import Speaker
from voiceconv.errors import VoiceconvError
from voiceconv.features import MelSpectrogram


def _reference_mels(tmp_path, model):
    frontend = MelSpectrogram(model.mel_config)
    import soundfile as sf

    clips = [write_voice(tmp_path / f"r{k}.wav", f0, 1.0, seed=k) for k, f0 in enumerate((110.0, 125.0))]
    return [frontend(torch.from_numpy(sf.read(clip, dtype="float32")[0])) for clip in clips]


def test_fitting_lowers_the_reference_error_and_leaves_the_model_untouched(tmp_path):
    model = tiny_model()
    mels = _reference_mels(tmp_path, model)
    with torch.no_grad():
        init = torch.stack([model.embed(mel[None])[0] for mel in mels]).mean(0)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fit = adapt_speaker(model, mels, init, steps=30, lr=0.1)
    # An untrained model rebuilds badly whatever the vector; the vector still buys a measurable share.
    assert fit.loss_after < 0.99 * fit.loss_before
    assert not torch.allclose(fit.vector, init)
    assert fit.vector.shape == init.shape and torch.isfinite(fit.vector).all()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), f"{name} changed"
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    # Deterministic, and zero steps is the encoder's vector as is.
    assert torch.equal(adapt_speaker(model, mels, init, steps=30, lr=0.1).vector, fit.vector)
    assert torch.equal(adapt_speaker(model, mels, init, steps=0).vector, init)
    # A pull toward the encoder's vector keeps the fitted one closer to it.
    held = adapt_speaker(model, mels, init, steps=30, lr=0.1, prior=50.0)
    assert 0 < (held.vector - init).norm() < (fit.vector - init).norm()


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": -1}, ">= 0"),
    ({"lr": 0.0}, "learning rate"),
    ({"prior": -1.0}, "prior"),
])
def test_bad_adaptation_settings_get_a_clear_error(tmp_path, kwargs, message):
    model = tiny_model()
    mels = _reference_mels(tmp_path, model)
    with pytest.raises(VoiceconvError, match=message):
        adapt_speaker(model, mels, torch.zeros(model.speaker_dim), **kwargs)
    with pytest.raises(VoiceconvError, match="at least one"):
        adapt_speaker(model, [], torch.zeros(model.speaker_dim))


def test_embedded_voice_is_fitted_and_keeps_the_encoders_vector(tmp_path):
    vc = tiny_converter()
    vc.adapt_steps = 20
    ref = write_voice(tmp_path / "ref.wav", 190.0, 1.2, seed=5)
    fitted = vc.embed_speaker([ref])
    plain = vc.embed_speaker([ref], adapt_steps=0)
    assert fitted.adapt_steps == 20 and plain.adapt_steps == 0 and plain.encoder_embedding is None
    torch.testing.assert_close(fitted.encoder_embedding, plain.embedding)
    assert not torch.allclose(fitted.embedding, plain.embedding)
    assert "fitted to the clips in 20 steps" in fitted.describe()
    # The fitted vector rebuilds the reference better than the encoder's.
    mel = vc.frontend(torch.from_numpy(__import__("soundfile").read(ref, dtype="float32")[0]))[None]
    with torch.no_grad():
        errors = {name: float((vc.model.convert(mel, speaker.embedding) - mel).abs().mean())
                  for name, speaker in (("fitted", fitted), ("plain", plain))}
    assert errors["fitted"] < errors["plain"]
    # Similarity compares in the encoder's space: a clip scores the same against either speaker.
    assert vc.similarity(str(ref), fitted) == pytest.approx(vc.similarity(str(ref), plain), abs=1e-6)
    with pytest.raises(VoiceconvError, match="adapt_steps"):
        vc.embed_speaker([ref], adapt_steps=-2)


def test_spk_file_keeps_both_vectors_and_reads_files_without_them(tmp_path):
    vc = tiny_converter()
    vc.adapt_steps = 5
    speaker = vc.embed_speaker([write_voice(tmp_path / "ref.wav", 150.0, 1.0, seed=6)], name="v")
    loaded = Speaker.load(speaker.save(tmp_path / "v.spk"))
    torch.testing.assert_close(loaded.embedding, speaker.embedding)
    torch.testing.assert_close(loaded.encoder_embedding, speaker.encoder_embedding)
    assert loaded.adapt_steps == 5
    # A file written before adaptation existed (one tensor, no adapt_steps) still loads.
    from safetensors.torch import save_file

    metadata = {"format": "voiceconv-speaker", "format_version": "1", "model_sha256": "", "name": "old"}
    save_file({"embedding": torch.ones(vc.model.speaker_dim)}, str(tmp_path / "old.spk"), metadata=metadata)
    old = Speaker.load(tmp_path / "old.spk")
    assert old.encoder_embedding is None and old.adapt_steps == 0
    torch.testing.assert_close(old.comparison_embedding, old.embedding)


def test_cli_adapt_steps_option(tmp_path, capsys):
    models = save_tiny_model(tmp_path / "models")[0].parent
    ref = write_voice(tmp_path / "ref.wav", 170.0, 1.0, seed=7)
    assert main(["embed", str(ref), "-o", str(tmp_path / "a.spk"), "--model", str(models), "--adapt-steps", "3"]) == 0
    assert main(["embed", str(ref), "-o", str(tmp_path / "b.spk"), "--model", str(models), "--adapt-steps", "0"]) == 0
    assert "fitted to the clips in 3 steps" in capsys.readouterr().out
    fitted, plain = Speaker.load(tmp_path / "a.spk"), Speaker.load(tmp_path / "b.spk")
    assert fitted.adapt_steps == 3 and plain.adapt_steps == 0
    torch.testing.assert_close(fitted.encoder_embedding, plain.embedding)
    assert main(["embed", str(ref), "-o", str(tmp_path / "c.spk"), "--model", str(models), "--adapt-steps", "-1"]) == 2
    assert "adapt_steps" in capsys.readouterr().err
    assert not (tmp_path / "c.spk").exists()


def test_channel_curve_recovers_a_smooth_gain_and_ignores_fine_structure():
    from voiceconv.convert.adapt import _channel_curve_fit

    n_mels = 80
    mel_std = torch.linspace(0.5, 2.0, n_mels)
    fit = _channel_curve_fit(4, mel_std)
    bands = torch.arange(n_mels) + 0.5
    smooth = 0.7 - 0.5 * torch.cos(torch.pi * bands / n_mels) + 0.2 * torch.cos(3 * torch.pi * bands / n_mels)
    # A gain per band (normalised) plus a part that varies over time and averages to zero.
    wobble = torch.sin(torch.linspace(0, 2 * torch.pi, 51)[:-1])  # (50,), zero mean
    residual = (smooth / mel_std)[None, :, None] + 0.5 * torch.randn(1, n_mels, 1) * wobble
    assert torch.allclose(fit(residual), (smooth / mel_std).reshape(1, -1, 1), atol=1e-5)
    # Detail with a period of a few bands (outside the four cosines' span) is left to the vector.
    fine = torch.cos(torch.pi * bands * 40 / n_mels)
    assert fit((fine / mel_std)[None, :, None].expand(1, n_mels, 50)).abs().max() < 1e-4
    assert _channel_curve_fit(0, mel_std) is None


def test_channel_curve_keeps_a_reference_gain_out_of_the_fitted_vector(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    # A trained content encoder reads the words through a microphone; an untrained one does not. Give
    # this one that property exactly (it sees each band's deviation from its own time average), so the
    # test isolates what the curve is for: keeping the reference's channel out of the vector.
    encode = model.content_encoder.forward
    model.content_encoder.forward = lambda mel, *rest, **kw: encode(mel - mel.mean(-1, keepdim=True), *rest, **kw)
    mels = _reference_mels(tmp_path, model)
    n_mels = mels[0].shape[0]
    bands = torch.arange(n_mels) + 0.5
    # A microphone: a smooth gain curve over the bands, added in the raw log-mel domain.
    gain = (0.8 * torch.cos(torch.pi * bands / n_mels) + 0.4 * torch.cos(2 * torch.pi * bands / n_mels))[:, None]
    coloured = [mel + gain for mel in mels]
    with torch.no_grad():
        init = torch.stack([model.embed(mel[None])[0] for mel in mels]).mean(0)
    drift = {}
    for basis in (0, 4):
        clean = adapt_speaker(model, mels, init, steps=30, lr=0.1, channel_basis=basis).vector
        through = adapt_speaker(model, coloured, init, steps=30, lr=0.1, channel_basis=basis).vector
        drift[basis] = float((through - clean).norm() / clean.norm())
    # With the curve, the coloured references give nearly the clean references' voice.
    assert drift[4] < 0.5 * drift[0], drift


def test_channel_basis_out_of_range_gets_a_clear_error(tmp_path):
    model = tiny_model()
    mels = _reference_mels(tmp_path, model)
    for bad in (-1, model.mel_config.n_mels + 1, 2.5, True):
        with pytest.raises(VoiceconvError, match="channel_basis"):
            adapt_speaker(model, mels, torch.zeros(model.speaker_dim), channel_basis=bad)
