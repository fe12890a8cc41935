"""Pitch tracking, the envelope-preserving spectral shift, and pitch control through conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import synthetic_voice
from test_api import SR

from voiceconv.convert.converter import VoiceConverter
from voiceconv.convert.pitch import F0Stats, auto_semitones, parse_pitch, shift_magnitude, track_f0
from voiceconv.convert.speaker import Speaker
from voiceconv.errors import VoiceconvError
from voiceconv.features import MelConfig, MelSpectrogram
from voiceconv.vocoder.model import Vocoder


def magnitude(audio: np.ndarray) -> torch.Tensor:
    return MelSpectrogram(MelConfig()).magnitude(torch.from_numpy(audio)[None].double())  # (1, 513, frames)


def cepstral_f0(mag: torch.Tensor) -> float:
    """Median F0 from the cepstral peak (pitch period) between 2.5 and 16 ms, over all frames."""
    cepstrum = torch.fft.irfft(torch.log(mag[0]), dim=0)  # (1024, frames)
    low, high = int(SR / 400), int(SR / 60)
    period = cepstrum[low:high].argmax(dim=0) + low
    return float(SR / period.double().median())


def envelope(mag: torch.Tensor, lifter: int = 30) -> torch.Tensor:
    cepstrum = torch.fft.irfft(torch.log(mag[0]), dim=0)
    cepstrum[lifter:-lifter] = 0
    return torch.fft.rfft(cepstrum, dim=0).real.mean(dim=-1)  # (513,): mean log-envelope


@pytest.mark.parametrize("semitones", [5.0, -4.0])
def test_shift_moves_harmonics_and_keeps_the_envelope(semitones):
    original = magnitude(synthetic_voice(120, seconds=1.0, seed=1))
    shifted = shift_magnitude(original, semitones, SR)
    assert cepstral_f0(original) == pytest.approx(120, rel=0.04)
    assert cepstral_f0(shifted) == pytest.approx(120 * 2 ** (semitones / 12), rel=0.04)
    # Formants stay: the envelope moves far less than that of a voice with other formants.
    other = magnitude(synthetic_voice(120, (900.0, 1700.0, 3000.0), seconds=1.0, seed=1))
    moved = (envelope(shifted) - envelope(original)).abs().mean()
    assert moved < 0.25 * (envelope(other) - envelope(original)).abs().mean()


def test_zero_shift_is_identity():
    original = magnitude(synthetic_voice(150, seconds=0.3))
    assert shift_magnitude(original, 0.0, SR) is original


def test_f0_statistics_of_a_voice():
    stats = F0Stats().update(synthetic_voice(150, seconds=1.0, seed=2), SR)
    assert stats.reliable and stats.voiced_seconds > 0.8
    assert math.exp(stats.mean) == pytest.approx(150, rel=0.03)
    assert 0 < stats.std < 0.05  # +-3 % vibrato
    # Chunked updates give the same statistics as one update.
    voice = synthetic_voice(150, seconds=2.0, seed=3)
    halves = F0Stats().update(voice[: SR], SR).update(voice[SR:], SR)
    assert halves.mean == pytest.approx(F0Stats().update(voice, SR).mean, abs=0.01)
    assert not F0Stats().update(np.zeros(SR, np.float32), SR).reliable
    assert track_f0(np.zeros(10), SR).size == 0


def test_auto_semitones():
    assert auto_semitones(math.log(100), math.log(200)) == pytest.approx(12.0)
    assert auto_semitones(math.log(200), math.log(150)) == pytest.approx(12 * math.log2(150 / 200))
    assert auto_semitones(math.log(50), math.log(400)) == 12.0  # clipped to an octave
    assert auto_semitones(math.nan, math.log(200)) == 0.0


def test_parse_pitch():
    assert parse_pitch("auto") == "auto"
    assert parse_pitch("off") is None and parse_pitch(None) is None and parse_pitch("0") is None
    assert parse_pitch("-3") == -3.0 and parse_pitch("+4.5") == 4.5 and parse_pitch(2) == 2.0
    for bad in ("high", 99, True):
        with pytest.raises(VoiceconvError):
            parse_pitch(bad)


class IdentityModel(torch.nn.Module):
    """'Converts' a mel to itself, so the output's pitch is the pitch control's doing alone."""

    def __init__(self):
        super().__init__()
        self.mel_config = MelConfig()
        self.speaker_dim = 2
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def convert(self, mel, speaker):
        return mel

    def embed(self, mel):
        return torch.zeros(mel.shape[0], 2)


def median_f0(audio: torch.Tensor) -> float:
    # The cepstral estimate, not DIO: DIO's voicing decision rejects Griffin-Lim's phasey output.
    return cepstral_f0(magnitude(audio.numpy()))


def test_pitch_control_through_conversion():
    vc = VoiceConverter(IdentityModel(), Vocoder.griffin_lim(MelConfig(), n_iter=32, device="cpu"), device="cpu")
    vc.adapt_steps = 0  # the identity model has no decoder to fit a voice to
    source = synthetic_voice(120, seconds=1.5, seed=4)
    target = vc.embed_speaker(synthetic_voice(200, seconds=1.5, seed=5))
    assert median_f0(vc.convert(source, target, pitch=None)) == pytest.approx(120, rel=0.05)
    assert median_f0(vc.convert(source, target, pitch=4)) == pytest.approx(120 * 2 ** (4 / 12), rel=0.05)
    assert vc.auto_pitch(source, target) == pytest.approx(12 * math.log2(200 / 120), abs=0.5)
    assert median_f0(vc.convert(source, target, pitch="auto")) == pytest.approx(200, rel=0.05)
    # No pitch statistics (a bare vector): "auto" does nothing.
    bare = Speaker.from_embedding(torch.zeros(2))
    assert median_f0(vc.convert(source, bare, pitch="auto")) == pytest.approx(120, rel=0.05)
