"""Waveform recording conditions for the robustness benchmark (voiceconv/evaluation/conditions.py)."""

from __future__ import annotations

import numpy as np
import pytest

from voiceconv.evaluation import conditions

RATE = 16000


def speech_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A 150 Hz harmonic voice with 4 Hz syllable bursts and pauses, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 40) if 150 * k < RATE / 2)
    envelope = (np.sin(2 * np.pi * 2 * t) > 0).astype(float)
    return (0.1 * voice * envelope + 1e-4 * rng.standard_normal(t.size)).astype(np.float32)


def band_energy(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequency = np.fft.rfftfreq(audio.size, 1 / RATE)
    return float(spectrum[(frequency >= low) & (frequency < high)].sum())


def test_telephone_removes_everything_above_4_khz_and_keeps_the_length():
    audio = speech_like()
    out = conditions.telephone(audio, RATE)
    assert out.shape == audio.shape and out.dtype == np.float32
    assert band_energy(out, 4200, 8000) < 1e-3 * band_energy(audio, 4200, 8000)
    assert band_energy(out, 300, 3000) > 0.5 * band_energy(audio, 300, 3000)


def test_eq_changes_the_balance_but_keeps_the_level():
    audio = speech_like()
    out = conditions.laptop_eq(audio, RATE)
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(audio**2)), rel=1e-3)
    low_ratio = band_energy(out, 0, 200) / band_energy(audio, 0, 200)
    presence_ratio = band_energy(out, 3000, 4000) / band_energy(audio, 3000, 4000)
    assert presence_ratio > 10 * low_ratio


def test_room_response_decays_at_its_rt60_and_fills_pauses():
    response = conditions.room_impulse_response(RATE, rt60=0.6, seed=1)
    energy = np.cumsum(response[::-1] ** 2)[::-1]  # Schroeder backward integral
    decay_db = 10 * np.log10(energy / energy[0])
    t20 = np.argmax(decay_db < -20) / RATE  # -20 dB reached after about a third of RT60
    assert 0.1 < t20 < 0.4
    audio = speech_like()
    out = conditions.reverberate(audio, RATE)
    pause = slice(int(0.26 * RATE), int(0.45 * RATE))  # the first pause follows a burst
    assert np.mean(out[pause] ** 2) > 100 * np.mean(audio[pause] ** 2)


@pytest.mark.parametrize("kind", conditions.NOISE_TYPES)
@pytest.mark.parametrize("snr_db", [5.0, 10.0])
def test_noise_is_mixed_at_the_requested_snr(kind, snr_db):
    audio = speech_like(seed=2)
    out = conditions.add_noise(audio, RATE, snr_db, kind, seed=3)
    noise = out.astype(np.float64) - audio
    active = np.abs(audio) > 0  # the bursts (pauses carry only the tiny floor)
    frames = audio[: audio.size // 800 * 800].reshape(-1, 800)
    power = (frames.astype(np.float64) ** 2).mean(1)
    speech_power = power[power >= power.max() * 1e-4].mean()
    measured = 10 * np.log10(speech_power / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.3) and active.any()


def test_unknown_noise_type_names_the_known_ones():
    with pytest.raises(ValueError, match="hum_fan, clicks, music"):
        conditions.make_noise("rain", 100, RATE)


def test_apply_channel_names_each_channel_and_rejects_unknown_ones():
    audio = speech_like(seed=3)
    np.testing.assert_array_equal(conditions.apply_channel(audio, RATE, "eq"), conditions.laptop_eq(audio, RATE))
    np.testing.assert_array_equal(conditions.apply_channel(audio, RATE, "phone"), conditions.telephone(audio, RATE))
    np.testing.assert_array_equal(conditions.apply_channel(audio, RATE, "room", seed=2),
                                  conditions.reverberate(audio, RATE, seed=2))
    with pytest.raises(ValueError, match="eq, phone, room"):
        conditions.apply_channel(audio, RATE, "tunnel")
