"""Recording-channel corruption of log-mels (voiceconv/training/channel.py): each corruption does what it says."""

from __future__ import annotations

import math

import pytest
import torch

from voiceconv.errors import ConfigError
from voiceconv.features import MelConfig
from voiceconv.training.channel import ChannelConfig, corrupt, mel_band_centres

MEL = MelConfig()
OFF = dict(eq_probability=0.0, band_limit_probability=0.0, reverb_probability=0.0, noise_probability=0.0)


def speech_like(batch: int = 8, frames: int = 120, seed: int = 0) -> torch.Tensor:
    """Log-mels with a falling spectrum and syllable-rate bursts separated by near-silence; ``(B, 80, T)``."""
    generator = torch.Generator().manual_seed(seed)
    bins = torch.arange(MEL.n_mels, dtype=torch.float32)
    envelope = -1.0 - 0.06 * bins  # (n_mels,): louder low bands
    time = torch.arange(frames, dtype=torch.float32)
    bursts = (torch.sin(2 * math.pi * time / 25.0) > 0).float()  # (T,): 50 % duty cycle
    mel = envelope[:, None] + torch.log(bursts * 1.0 + 1e-3)[None]  # (n_mels, T)
    mel = mel[None] + 0.3 * torch.randn(batch, MEL.n_mels, frames, generator=generator)
    return mel.clamp_min(math.log(MEL.log_clamp))


def test_probability_zero_is_the_identity_and_input_is_untouched():
    mel = speech_like()
    before = mel.clone()
    out = corrupt(mel, ChannelConfig(probability=0.0), torch.Generator().manual_seed(0), MEL)
    assert torch.equal(mel, before)
    assert torch.allclose(out, mel, atol=1e-5)


def test_same_seed_same_channel_and_finite():
    mel = speech_like()
    a = corrupt(mel, ChannelConfig(probability=1.0), torch.Generator().manual_seed(3), MEL)
    b = corrupt(mel, ChannelConfig(probability=1.0), torch.Generator().manual_seed(3), MEL)
    c = corrupt(mel, ChannelConfig(probability=1.0), torch.Generator().manual_seed(4), MEL)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all() and a.min() >= math.log(MEL.log_clamp) - 1e-5


def test_band_limit_removes_the_bands_above_the_cutoff_only():
    mel = speech_like()
    config = ChannelConfig(probability=1.0, **{**OFF, "band_limit_probability": 1.0}, band_limit_hz=(4000.0,))
    out = corrupt(mel, config, torch.Generator().manual_seed(0), MEL)
    centres = mel_band_centres(MEL)
    above, below = centres > 4800.0, (centres > 400.0) & (centres < 3500.0)
    audible = mel[:, above] > math.log(MEL.log_clamp) + 6.0  # bins that can fall 5 nepers before the floor
    assert audible.sum() > 100
    assert (out[:, above][audible] < mel[:, above][audible] - 5.0).all()  # more than 5 nepers (43 dB) down
    assert torch.allclose(out[:, below], mel[:, below], atol=1e-4)


def test_telephone_band_also_cuts_the_lows():
    mel = speech_like()
    config = ChannelConfig(probability=1.0, **{**OFF, "band_limit_probability": 1.0}, band_limit_hz=(3400.0,))
    out = corrupt(mel, config, torch.Generator().manual_seed(0), MEL)
    lows = mel_band_centres(MEL) < 150.0
    assert (out[:, lows] < mel[:, lows] - 1.0).all()


def test_noise_fills_the_pauses_at_the_requested_snr():
    mel = speech_like()
    config = ChannelConfig(probability=1.0, **{**OFF, "noise_probability": 1.0}, snr_db=(10.0, 10.0),
                           babble_share=0.0)
    out = corrupt(mel, config, torch.Generator().manual_seed(0), MEL)
    clean, noisy = torch.exp(mel), torch.exp(out)
    snr = 10 * torch.log10(clean.mean((1, 2)) / (noisy - clean).mean((1, 2)))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.5), snr
    pauses = mel.mean(1) < -6.0  # (B, T) near-silent frames
    assert (out.mean(1)[pauses] > mel.mean(1)[pauses] + 1.0).all()  # the floor rose in the pauses


def test_reverberation_smears_energy_into_the_following_pause():
    mel = speech_like(frames=100)
    config = ChannelConfig(probability=1.0, **{**OFF, "reverb_probability": 1.0}, rt60_s=(0.8, 0.8),
                           drr_db=(0.0, 0.0))
    out = corrupt(mel, config, torch.Generator().manual_seed(0), MEL)
    # Frames 13-24 are the first pause, right after the first burst (frames 0-12).
    assert (out[:, :20, 14:18] > mel[:, :20, 14:18] + 2.0).all()
    # The direct sound keeps the bursts themselves close to their level (about +3 dB at DRR 0 dB).
    rise = torch.exp(out[:, :, 5:12]).mean() / torch.exp(mel[:, :, 5:12]).mean()
    assert 1.2 < float(rise) < 2.1


def test_eq_is_a_smooth_bounded_gain():
    mel = speech_like()
    config = ChannelConfig(probability=1.0, **{**OFF, "eq_probability": 1.0}, eq_db=6.0, tilt_db=8.0)
    out = corrupt(mel, config, torch.Generator().manual_seed(1), MEL)
    gain_db = (out - mel) * 10 / math.log(10)  # (B, n_mels, T) power dB
    loud = mel > math.log(MEL.log_clamp) + 4.0  # (B, n_mels, T): far enough above the floor not to be clamped
    per_bin = gain_db[..., 5:6].expand_as(gain_db)  # frame 5 is inside the first burst
    assert torch.allclose(gain_db[loud], per_bin[loud], atol=1e-3)  # the same gain in every frame
    assert gain_db.abs().max() <= 6.0 + 4.0 + 1e-3
    assert gain_db.abs().amax((1, 2)).min() > 0.1  # every utterance got an EQ


def test_padding_stays_at_the_floor():
    mel = speech_like()
    mask = torch.ones(mel.shape[0], mel.shape[2])
    mask[:, 100:] = 0
    mel[:, :, 100:] = math.log(MEL.log_clamp)
    out = corrupt(mel, ChannelConfig(probability=1.0, noise_probability=1.0), torch.Generator().manual_seed(0),
                  MEL, mask)
    assert torch.equal(out[:, :, 100:], mel[:, :, 100:])


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="channel.noise_probability"):
        ChannelConfig(noise_probability=1.5)
    with pytest.raises(ConfigError, match="channel.snr_db"):
        ChannelConfig(snr_db=(20.0, 5.0))
    with pytest.raises(ConfigError, match="band_limit_hz"):
        ChannelConfig(band_limit_hz=(200.0,))
