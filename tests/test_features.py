"""The mel front end against an independent NumPy implementation of the HiFi-GAN formula."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import scipy.signal
import torch
from helpers import synthetic_voice

from voiceconv.errors import ConfigError, VoiceconvError
from voiceconv.features import MelConfig, MelMismatchError, MelSpectrogram, mel_basis


def reference_log_mel(audio: np.ndarray, c: MelConfig) -> np.ndarray:
    """HiFi-GAN's ``mel_spectrogram`` written out in float64 NumPy: ``(T,) -> (n_mels, frames)``.

    Reflect-pad (n_fft - hop) / 2 each side, frame without centring, periodic Hann window of
    win_length zero-padded to n_fft in the middle, rfft, sqrt(re^2 + im^2 + 1e-9), Slaney mel basis,
    natural log of the clamp at 1e-5.
    """
    audio = np.asarray(audio, np.float64)
    pad = (c.n_fft - c.hop_length) // 2
    padded = np.pad(audio, (pad, pad), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft)[:: c.hop_length]  # (frames, n_fft)
    window = scipy.signal.get_window("hann", c.win_length, fftbins=True)  # periodic, as torch.hann_window
    left = (c.n_fft - c.win_length) // 2
    window = np.pad(window, (left, c.n_fft - c.win_length - left))
    spectrum = np.fft.rfft(frames * window, axis=1)  # (frames, n_fft // 2 + 1)
    magnitude = np.sqrt(spectrum.real**2 + spectrum.imag**2 + 1e-9)
    basis = librosa.filters.mel(
        sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, htk=False, norm="slaney",
        dtype=np.float64,
    )
    return np.log(np.maximum(basis @ magnitude.T, c.log_clamp))


def _speechlike(seconds: float = 1.0, sr: int = 22050) -> np.ndarray:
    """A voice with silence at both ends and a little noise, so every log-mel regime is covered."""
    voice = synthetic_voice(130, seconds=seconds, sr=sr)
    gap = np.zeros(sr // 10, np.float32)
    audio = np.concatenate([gap, voice, gap])
    audio[len(audio) - sr // 20 :] += 1e-3 * np.random.default_rng(0).standard_normal(sr // 20).astype(np.float32)
    return audio


def test_default_mel_matches_reference_within_1e4():
    config = MelConfig()
    assert (config.sample_rate, config.n_fft, config.hop_length, config.win_length, config.n_mels) == (
        22050, 1024, 256, 1024, 80
    )
    assert (config.fmin, config.fmax, config.log_clamp) == (0.0, 8000.0, 1e-5)
    audio = _speechlike()
    ours = MelSpectrogram(config)(torch.from_numpy(audio)).numpy()
    reference = reference_log_mel(audio, config)
    assert ours.shape == reference.shape == (80, len(audio) // 256)
    assert np.abs(ours - reference).max() < 1e-4
    # The clamp is reached in the silent gaps, so that branch of the formula is compared too.
    assert (reference <= np.log(1e-5) + 1e-9).any()


def test_other_configs_match_reference():
    """win_length < n_fft (window padded in the middle), fmin > 0, fmax None = Nyquist, another rate."""
    config = MelConfig(sample_rate=16000, n_fft=512, hop_length=160, win_length=400, n_mels=64, fmin=50.0, fmax=None)
    audio = _speechlike(sr=16000)
    ours = MelSpectrogram(config)(torch.from_numpy(audio).double()).numpy()
    reference = reference_log_mel(audio, config)
    assert ours.shape == reference.shape == (64, len(audio) // 160)
    np.testing.assert_allclose(ours, reference, atol=1e-8)


def test_mel_basis_is_slaney():
    basis = mel_basis(MelConfig())
    assert basis.shape == (80, 513) and basis.dtype == np.float32
    assert basis[:, 513 * 8000 // 11025 + 2 :].max() == 0.0  # nothing above fmax = 8 kHz
    slaney = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000, norm="slaney")
    np.testing.assert_allclose(basis, slaney, rtol=1e-6)


@pytest.mark.parametrize("length", [385, 511, 512, 1000, 22050, 22050 + 255, 22050 + 256, 44100 * 3 + 17])
def test_frames_are_exactly_length_over_hop(length):
    audio = torch.from_numpy(np.random.default_rng(length).uniform(-0.5, 0.5, length).astype(np.float32))
    mel = MelSpectrogram()(audio)
    assert mel.shape == (80, length // 256)
    assert torch.isfinite(mel).all()


def test_too_short_or_wrong_rank_raises():
    mel_fn = MelSpectrogram()
    for length in (100, 255, 384):  # under one hop, or not more than the 384-sample reflect padding
        with pytest.raises(ValueError, match="too short for one mel frame"):
            mel_fn(torch.zeros(length))
    assert MelConfig().min_samples == 385
    with pytest.raises(ValueError, match=r"expected audio of shape \(T,\) or \(B, T\)"):
        mel_fn(torch.zeros(2, 1, 4000))


def test_batched_equals_unbatched():
    mel_fn = MelSpectrogram()
    clips = [synthetic_voice(f0, seconds=0.5, seed=i) for i, f0 in enumerate((90, 150, 260))]
    batch = mel_fn(torch.from_numpy(np.stack(clips)))  # (3, 80, frames)
    assert batch.shape == (3, 80, len(clips[0]) // 256)
    for i, clip in enumerate(clips):
        torch.testing.assert_close(batch[i], mel_fn(torch.from_numpy(clip)), atol=1e-5, rtol=0)
    assert not torch.allclose(batch[0], batch[1])  # and the rows are really different clips


def test_gradient_flows():
    audio = torch.from_numpy(synthetic_voice(seconds=0.3)).requires_grad_()
    MelSpectrogram()(audio).mean().backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all() and audio.grad.abs().sum() > 0
    # Exact zeros (digital silence) must not give NaN gradients: the 1e-9 inside the root sees to that.
    silence = torch.zeros(4096, requires_grad=True)
    MelSpectrogram(MelConfig(log_clamp=1e-12))(silence).sum().backward()
    assert torch.isfinite(silence.grad).all()


def test_gradcheck_float64():
    config = MelConfig(sample_rate=8000, n_fft=64, hop_length=16, win_length=64, n_mels=8, fmax=None)
    mel_fn = MelSpectrogram(config)
    audio = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, 96)).requires_grad_()
    assert torch.autograd.gradcheck(mel_fn, (audio,), eps=1e-6, atol=1e-5)


def test_float64_input_gives_float64_output():
    audio = _speechlike()
    mel64 = MelSpectrogram()(torch.from_numpy(audio).double())
    assert mel64.dtype == torch.float64
    np.testing.assert_allclose(mel64.numpy(), reference_log_mel(audio, MelConfig()), atol=1e-9)
    mel32 = MelSpectrogram()(torch.from_numpy(audio))
    assert mel32.dtype == torch.float32
    assert (mel64 - mel32.double()).abs().max() < 1e-4


def test_low_precision_input_and_autocast_compute_in_float32():
    audio = torch.from_numpy(synthetic_voice(seconds=0.3))
    mel_fn = MelSpectrogram()
    reference = mel_fn(audio)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = mel_fn(audio)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, atol=1e-6, rtol=0)
    half = mel_fn(audio.half())
    assert half.dtype == torch.float32 and (half - reference).abs().max() < 0.05  # only the input was rounded


def test_module_has_no_state_dict_entries():
    """The basis and window are derived from the config, so checkpoints do not carry (or pin) them."""
    assert MelSpectrogram().state_dict() == {}


def test_config_round_trip_and_validation():
    config = MelConfig(sample_rate=16000, hop_length=200, n_fft=800, win_length=800, fmax=None)
    assert MelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.frame_rate == 80.0 and config.padding == 300
    assert config.min_log == pytest.approx(np.log(1e-5))
    with pytest.raises(ConfigError, match="unknown mel config key.*hop_size.*known keys:.*hop_length"):
        MelConfig.from_dict({"hop_size": 256})
    bad = [
        ({"win_length": 2048}, "must not exceed n_fft"),
        ({"hop_length": 255}, "must be even"),
        ({"fmax": 12000.0}, "above Nyquist"),
        ({"fmin": 9000.0}, "fmin < fmax"),
        ({"n_mels": 0}, "positive integer"),
        ({"sample_rate": 22050.5}, "positive integer"),
        ({"log_clamp": 0.0}, "log_clamp must be positive"),
        ({"hop_length": 1024 + 2, "n_fft": 2048}, "would skip samples"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ConfigError, match=message):
            MelConfig(**kwargs)


def test_check_compatible_names_every_difference():
    model, vocoder = MelConfig(), MelConfig(sample_rate=24000, hop_length=300, n_fft=1200, win_length=1200)
    model.check_compatible(MelConfig())  # equal configs pass
    model.check_compatible(MelConfig(fmax=8000))  # int vs float of the same value is the same config
    with pytest.raises(MelMismatchError) as info:
        model.check_compatible(vocoder, "VC model", "vocoder")
    message = str(info.value)
    for field in ("sample_rate: VC model=22050 vs vocoder=24000", "hop_length", "n_fft", "win_length"):
        assert field in message
    assert "n_mels" not in message
    assert "Use a vocoder trained on the same mel config" in message and "\n" not in message
    assert isinstance(info.value, VoiceconvError)
