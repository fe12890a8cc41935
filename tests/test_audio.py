"""load_audio / save_audio on every supported format, rate, depth and channel count, and every bad input."""

from __future__ import annotations

import os
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import synthetic_voice

from voiceconv import audio as audio_module
from voiceconv.audio import load_audio, loudness_normalize, peak_normalize, save_audio, trim_silence
from voiceconv.errors import AudioError, VoiceconvError

OUT_RATE = 22050
# What soundfile can write here. MPEG audio has at most two channels, and libsndfile writes only
# Layer III; Opus exists only at 8/12/16/24/48 kHz, so OGG is tested with Vorbis.
FORMATS = [
    ("wav", "PCM_16"),
    ("wav", "PCM_24"),
    ("wav", "FLOAT"),
    ("flac", "PCM_16"),
    ("flac", "PCM_24"),
    ("ogg", "VORBIS"),
    ("mp3", "MPEG_LAYER_III"),
]
LOSSY = {"ogg", "mp3"}
# Lossy decoders may return a few more or fewer samples than were encoded: MP3 encoders pad to whole
# 1152-sample frames and add ~529 samples of decoder delay, which only a LAME/Xing tag lets the
# decoder remove (libsndfile does remove it for files it wrote, but not every encoder writes the tag);
# Ogg/Vorbis end trimming relies on the last page's granule position. One MP3 frame plus the delay
# bounds both.
LOSSY_SLACK = 1152 + 529


def _tone(n: int, rate: int, channels: int, freq: float = 440.0) -> np.ndarray:
    """(n, channels) sines of one frequency, channel c at amplitude 0.2 + 0.1 c, so the downmix is known."""
    t = np.arange(n) / rate
    return np.stack([(0.2 + 0.1 * c) * np.sin(2 * np.pi * freq * t) for c in range(channels)], axis=1).astype(
        np.float32
    )


def _dominant_frequency(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("ext,subtype", FORMATS)
def test_load_audio_formats_rates_channels(tmp_path, rate, channels, ext, subtype):
    if ext == "mp3" and channels > 2:
        pytest.skip("MPEG audio carries at most two channels")
    n = int(rate * 0.5) + 7  # not a round number of anything
    data = _tone(n, rate, channels)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, data, rate, format=ext.upper(), subtype=subtype)

    out = load_audio(path, OUT_RATE)
    assert out.dtype == np.float32 and out.ndim == 1
    expected = n * OUT_RATE / rate
    slack = LOSSY_SLACK * OUT_RATE / rate if ext in LOSSY else 1
    assert abs(len(out) - expected) <= slack, (len(out), expected)
    # The rate is really right (not just the length): the 440 Hz tone is still at 440 Hz.
    assert _dominant_frequency(out, OUT_RATE) == pytest.approx(440.0, abs=3.0)
    if ext == "ogg" and channels == 6:
        return  # Vorbis maps 6 channels to 5.1 and low-passes the LFE channel, so the 440 Hz level drops
    # Channels are averaged: amplitude 0.2 + 0.05 (C - 1), i.e. RMS that over sqrt(2).
    middle = out[len(out) // 4 : 3 * len(out) // 4]
    expected_rms = (0.2 + 0.05 * (channels - 1)) / np.sqrt(2)
    tolerance = 0.05 if ext in LOSSY else 0.005
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(expected_rms, rel=tolerance)


@pytest.mark.parametrize("subtype,bits", [("PCM_16", 16), ("PCM_24", 24), ("FLOAT", 24)])
@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_native_rate_is_bit_accurate(tmp_path, subtype, bits, ext):
    """At its own rate a file comes back unresampled, with the precision of its bit depth (int24 included)."""
    if ext == "flac" and subtype == "FLOAT":
        pytest.skip("FLAC has no float subtype")
    rng = np.random.default_rng(0)
    data = (rng.uniform(-0.9, 0.9, 8000)).astype(np.float32)
    path = tmp_path / f"x.{ext}"
    sf.write(path, data, 16000, subtype=subtype)
    out = load_audio(path, 16000)
    assert len(out) == len(data)
    assert np.abs(out - data).max() <= 2.0 ** -(bits - 1)


def test_stereo_channels_really_are_averaged(tmp_path):
    left = synthetic_voice(120, seconds=0.5)
    right = synthetic_voice(220, seconds=0.5, seed=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), OUT_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, OUT_RATE), (left + right) / 2, atol=1e-6)


def test_long_multichannel_file_decodes_in_blocks(tmp_path):
    """Peak memory stays near one mono float32 copy, not one per channel (soundfile.read would hold 6)."""
    rate, seconds, channels = 48000, 20, 6
    n = rate * seconds
    data = np.tile(_tone(rate, rate, 1), (seconds, channels))  # (n, 6)
    path = tmp_path / "long.wav"
    sf.write(path, data, rate, subtype="PCM_16")
    del data
    tracemalloc.start()
    out = load_audio(path, rate)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mono_bytes = n * 4
    block_bytes = audio_module.READ_BLOCK * channels * 4  # one decoded (frames, C) float32 block
    assert len(out) == n
    # soundfile.read would need channels * mono_bytes (23 MB) before the downmix.
    assert peak < mono_bytes + 2 * block_bytes, f"peak {peak / 1e6:.1f} MB for {mono_bytes / 1e6:.1f} MB of mono"


def test_length_beyond_preallocation_is_appended(tmp_path, monkeypatch):
    """Files longer than the preallocated buffer (or than their header says) come back whole and in order."""
    monkeypatch.setattr(audio_module, "MAX_PREALLOCATE", 1000)
    monkeypatch.setattr(audio_module, "READ_BLOCK", 700)
    data = np.random.default_rng(0).uniform(-0.5, 0.5, 5003).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, 16000), data)


# ----------------------------------------------------------------------------------------- arrays


def test_array_layouts_agree():
    mono = synthetic_voice(seconds=0.2)
    stereo = np.stack([mono, mono * 0.5])  # (2, T)
    expected = mono * 0.75
    np.testing.assert_allclose(load_audio(mono, OUT_RATE), mono)
    np.testing.assert_allclose(load_audio(stereo, OUT_RATE), expected, atol=1e-7)
    np.testing.assert_allclose(load_audio(stereo.T, OUT_RATE), expected, atol=1e-7)  # (T, 2)
    np.testing.assert_allclose(load_audio(torch.from_numpy(stereo), OUT_RATE), expected, atol=1e-7)
    np.testing.assert_allclose(load_audio(mono[None, None], OUT_RATE), mono)  # (1, 1, T)
    grad = torch.from_numpy(mono).requires_grad_()
    np.testing.assert_allclose(load_audio(grad, OUT_RATE), mono)
    np.testing.assert_allclose(load_audio(torch.from_numpy(mono).bfloat16(), OUT_RATE), mono, atol=4e-3)
    np.testing.assert_allclose(load_audio(mono.astype(np.float64), OUT_RATE), mono, atol=1e-7)


def test_integer_arrays_and_gradio_tuples():
    mono = synthetic_voice(seconds=0.2, sr=16000)
    pcm = np.round(mono * 32767).astype(np.int16)
    from_int = load_audio(pcm, 16000)
    np.testing.assert_allclose(from_int, pcm / 32768.0, atol=1e-7)
    # Gradio gives (rate, int16 (T, C)) at the microphone's rate; we resample to the model's.
    out = load_audio((16000, np.stack([pcm, pcm], axis=1)), OUT_RATE)
    assert abs(len(out) - len(pcm) * OUT_RATE / 16000) <= 1
    np.testing.assert_allclose(load_audio((pcm, 16000), 16000), from_int)  # either order
    out = load_audio(mono, OUT_RATE, source_rate=16000)
    assert abs(len(out) - len(mono) * OUT_RATE / 16000) <= 1
    uint8 = np.full(4000, 128, np.uint8)
    uint8[::2] = 255
    np.testing.assert_allclose(load_audio(uint8, 16000)[:2], [127 / 128, 0.0])


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((2000, 2000), np.float32), "cannot tell channels from time"),
        (np.random.default_rng(0).uniform(-1, 1, (100, 4000)).astype(np.float32), "more than 64 channels"),
        (np.random.default_rng(0).uniform(-1, 1, (3, 2, 4000)).astype(np.float32), "pass one clip at a time"),
        (np.array(["a", "b"]), "unsupported sample type"),
        (np.zeros(0, np.float32), "contains no audio"),
        (np.full(4000, np.inf, np.float32), "NaN or Inf"),
        (np.zeros(4000, np.float32), "silent"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(AudioError, match=message) as info:
        load_audio(array, 16000)
    assert "<array input>" in str(info.value) and "\n" not in str(info.value)


def test_bad_array_rates():
    with pytest.raises(AudioError, match="not a whole number"):
        load_audio(np.ones(4000, np.float32) * 0.1, 16000, source_rate=16000.5)
    with pytest.raises(AudioError, match="outside the supported"):
        load_audio((10, np.ones(4000, np.float32) * 0.1), 16000)
    silent_ok = load_audio(np.zeros(4000, np.float32), 16000, allow_silence=True)
    assert silent_ok.shape == (4000,) and not silent_ok.any()


# ------------------------------------------------------------------------------------- bad files


def _good(tmp_path, ext="wav", subtype=None, seconds=1.0, rate=16000):
    path = tmp_path / f"good.{ext}"
    sf.write(path, synthetic_voice(seconds=seconds, sr=rate), rate, format=ext.upper(), subtype=subtype)
    return path


def _bytes(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _wav_with_rate(tmp_path, name, rate):
    raw = bytearray(_good(tmp_path).read_bytes())
    raw[24:28] = struct.pack("<I", rate)  # fmt chunk: sample rate
    raw[28:32] = struct.pack("<I", rate * 2)  # byte rate for 16-bit mono
    return _bytes(tmp_path, name, bytes(raw))


def _corrupt_middle(tmp_path, name, ext):
    raw = bytearray(_good(tmp_path, ext).read_bytes())
    start = len(raw) // 3
    raw[start : start + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return _bytes(tmp_path, name, bytes(raw))


def _float_wav(tmp_path, name, value):
    data = synthetic_voice(seconds=0.5, sr=16000)
    data[100:110] = value
    path = tmp_path / name
    sf.write(path, data, 16000, subtype="FLOAT")
    return path


BAD_FILES = {
    # name: (builder(tmp_path) -> path, what the message must say is wrong, what it must say to do)
    "missing": (lambda d: d / "missing.wav", "file not found", "check the path"),
    "directory": (lambda d: (d / "folder.wav").mkdir() or d / "folder.wav", "is a directory", "pass a WAV"),
    "text_as_wav": (lambda d: _bytes(d, "notes.wav", b"hello, I am not audio\n" * 50), "not a readable audio file",
                    "convert it to WAV"),
    "random_as_mp3": (lambda d: _bytes(d, "noise.mp3", np.random.default_rng(0).bytes(5000)),
                      "format not recognised", "convert it to WAV"),
    "truncated_wav_header": (lambda d: _bytes(d, "cut.wav", _good(d).read_bytes()[:30]), "not a readable audio",
                             "convert it to"),
    "garbled_wav_header": (lambda d: _bytes(d, "garbled.wav", b"RIFX" + _good(d).read_bytes()[4:]),
                           "not a readable audio", "convert it to"),
    "truncated_flac_header": (lambda d: _bytes(d, "cut.flac", _good(d, "flac").read_bytes()[:20]),
                              "not a readable audio", "convert it to"),
    "truncated_flac_data": (lambda d: _bytes(d, "half.flac", _good(d, "flac").read_bytes()[:6000]),
                            "corrupt", "re-download"),
    # Garbage inside an MP3 either stops libmpg123 with an error or makes it resync and end early;
    # both are caught (the second by comparing with the length the header declares).
    "garbled_mp3": (lambda d: _corrupt_middle(d, "garbled.mp3", "mp3"), "corrupt", "re-download"),
    "truncated_mp3": (lambda d: _bytes(d, "half.mp3", _good(d, "mp3").read_bytes()[:3000]),
                      "decoding stopped after", "re-download"),
    "garbled_ogg": (lambda d: _corrupt_middle(d, "garbled.ogg", "ogg"), "malformed", "convert it to"),
    "zero_bytes": (lambda d: _bytes(d, "empty.wav", b""), "empty (0 bytes)", "re-export"),
    "zero_samples": (lambda d: (sf.write(d / "nothing.wav", np.zeros(0, np.float32), 16000), d / "nothing.wav")[1],
                     "no audio samples", "re-export"),
    "shorter_than_a_frame": (lambda d: _good(d, seconds=100 / 16000), "6.2 ms long", "use a longer recording"),
    "nan_samples": (lambda d: _float_wav(d, "nan.wav", np.nan), "10 samples are NaN or Inf", "re-export"),
    "inf_samples": (lambda d: _float_wav(d, "inf.wav", np.inf), "NaN or Inf", "re-export"),
    "all_silent": (lambda d: (sf.write(d / "quiet.wav", np.zeros(16000), 16000), d / "quiet.wav")[1],
                   "silent", "choose a clip with speech"),
    "rate_1_hz": (lambda d: _wav_with_rate(d, "slow.wav", 1), "1 Hz is outside", "re-export the file at"),
    "rate_3_mhz": (lambda d: _wav_with_rate(d, "fast.wav", 3_000_000), "3000000 Hz is outside",
                   "re-export the file at"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_gives_one_line_error_naming_the_file(tmp_path, case):
    build, problem, fix = BAD_FILES[case]
    path = build(tmp_path)
    with pytest.raises(AudioError) as info:
        load_audio(path, OUT_RATE)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    assert problem in message
    assert fix in message
    assert isinstance(info.value, VoiceconvError) and isinstance(info.value, ValueError)


def test_requested_rate_zero_names_the_file(tmp_path):
    path = _good(tmp_path)
    for bad in (0, -16000, 16000.5, True):
        with pytest.raises(AudioError, match="requested output") as info:
            load_audio(path, bad)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert "ask for the model's rate" in str(info.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path):
    path = _good(tmp_path)
    path.chmod(0)
    with pytest.raises(AudioError, match="permission denied"):
        load_audio(path, OUT_RATE)


def test_short_mp3_shortfall_is_tolerated(tmp_path):
    """A valid MP3 loads to the encoded length (libsndfile honours the LAME tag it writes)."""
    path = _good(tmp_path, "mp3", seconds=0.3)
    out = load_audio(path, 16000)
    assert abs(len(out) - 4800) <= LOSSY_SLACK


def test_min_duration_is_configurable(tmp_path):
    path = _good(tmp_path, seconds=0.2)
    assert len(load_audio(path, 16000, min_duration=0.1)) == 3200
    with pytest.raises(AudioError, match="at least 300 ms"):
        load_audio(path, 16000, min_duration=0.3)


# ------------------------------------------------------------------------------------------- save


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_save_audio_round_trip(tmp_path, ext):
    audio = synthetic_voice(seconds=0.5)
    path = save_audio(tmp_path / "sub" / f"out.{ext}", torch.from_numpy(audio)[None], OUT_RATE)
    assert path.exists() and sorted(p.name for p in path.parent.iterdir()) == [f"out.{ext}"]  # no temp file left
    back = load_audio(path, OUT_RATE)
    assert abs(len(back) - len(audio)) <= (LOSSY_SLACK if ext in LOSSY else 0)
    if ext in ("wav", "flac"):
        np.testing.assert_allclose(back, audio, atol=1 / 32767)


def test_save_audio_refuses_bad_input_and_leaves_nothing(tmp_path):
    audio = synthetic_voice(seconds=0.2)
    with pytest.raises(AudioError, match="cannot write MP3 .* 96000 Hz .* write a .wav"):
        save_audio(tmp_path / "x.mp3", audio, 96000)
    with pytest.raises(AudioError, match="NaN or Inf"):
        save_audio(tmp_path / "x.wav", np.full(100, np.nan), OUT_RATE)
    with pytest.raises(AudioError, match="mono audio of shape"):
        save_audio(tmp_path / "x.wav", np.stack([audio, audio]), OUT_RATE)
    with pytest.raises(AudioError, match="unsupported output extension '.aiff'"):
        save_audio(tmp_path / "x.aiff", audio, OUT_RATE)
    assert list(tmp_path.iterdir()) == []


def test_save_audio_replaces_atomically(tmp_path):
    path = tmp_path / "out.wav"
    save_audio(path, np.full(1000, 0.25), 16000)
    save_audio(path, np.full(2000, -0.5), 16000)
    back, rate = sf.read(path)
    assert rate == 16000 and len(back) == 2000 and back[0] == pytest.approx(-0.5, abs=1e-4)
    save_audio(path, np.full(100, 3.0), 16000)  # clipped, not wrapped around
    assert sf.read(path)[0].min() > 0.99


# ------------------------------------------------------------------------------------- processing


def test_trim_silence_keeps_margin():
    rate = 16000
    voice = synthetic_voice(seconds=0.5, sr=rate)
    padded = np.concatenate([np.zeros(rate), voice, np.zeros(rate)]).astype(np.float32)
    trimmed = trim_silence(padded, rate, margin=0.05)
    assert len(voice) <= len(trimmed) <= len(voice) + 2 * int(0.05 * rate) + 2 * 1024
    assert len(trim_silence(np.zeros(0, np.float32), rate)) == 0


def test_trim_silence_matches_librosa():
    """Our NumPy trim follows librosa.effects.trim's rule exactly (it only avoids librosa's JIT warm-up)."""
    import librosa

    rng = np.random.default_rng(0)
    for trial in range(12):
        voice = synthetic_voice(100 + 20 * trial, seconds=rng.uniform(0.05, 1.0), seed=trial)
        noise = [1e-4 * rng.standard_normal(int(rng.integers(0, 20000))) for _ in range(2)]
        audio = np.concatenate([noise[0], voice, noise[1]]).astype(np.float32)
        _, (start, end) = librosa.effects.trim(audio, top_db=40, frame_length=1024, hop_length=256)
        np.testing.assert_array_equal(trim_silence(audio, OUT_RATE, margin=0), audio[start:end])
    silence = np.zeros(5000, np.float32)
    assert len(trim_silence(silence, OUT_RATE)) == 5000  # nothing is louder than anything else: keep all


def test_peak_and_loudness_normalize():
    voice = synthetic_voice(seconds=0.5) * 0.1
    peaked = peak_normalize(voice, -1.0)
    assert np.abs(peaked).max() == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    loud = loudness_normalize(voice, target_db=-30.0)
    assert 20 * np.log10(np.sqrt(np.mean(loud.astype(np.float64) ** 2))) == pytest.approx(-30.0, abs=1.5)
    assert np.abs(loudness_normalize(voice, target_db=0.0)).max() <= 10 ** (-1 / 20) + 1e-6  # peak limit wins
    silent = np.zeros(4000, np.float32)
    assert peak_normalize(silent) is silent and loudness_normalize(silent) is silent
