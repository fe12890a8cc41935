"""VoiceConverter end to end on a tiny random model: loading, speakers, conversion, chunking, files.

Everything runs on random-init models built from debug.yaml (no trained weights), on synthetic
voices written to tmp_path.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import synthetic_voice

import voiceconv
from voiceconv.config import from_dict, load_yaml
from voiceconv.convert.converter import VoiceConverter
from voiceconv.convert.engine import ConversionEngine, model_receptive_field
from voiceconv.convert.speaker import Speaker, SpeakerFileError, SpeakerMismatchError
from voiceconv.convert.windows import ChunkPlan, MelStream
from voiceconv.errors import AudioError, CheckpointError, VoiceconvError
from voiceconv.features import MelConfig, MelMismatchError, MelSpectrogram
from voiceconv.models.vc_model import VCConfig, VCModel
from voiceconv.vocoder.generator import ISTFTGeneratorConfig
from voiceconv.vocoder.model import Vocoder, VocoderConfig

SR = 22050
DEBUG_YAML = Path(voiceconv.__file__).parent / "conf" / "debug.yaml"


# ---- shared builders (imported by test_streaming, test_pitch and test_batch) ----------------------


def tiny_model(seed: int = 0) -> VCModel:
    """The debug.yaml architecture with random weights."""
    torch.manual_seed(seed)
    return VCModel(from_dict(VCConfig, load_yaml(DEBUG_YAML)["model"])).eval()


def tiny_vocoder(mel: MelConfig | None = None, seed: int = 0) -> Vocoder:
    """A random iSTFT vocoder small enough to run in milliseconds; exact under chunking like the real one."""
    torch.manual_seed(seed)
    config = VocoderConfig(mel=mel or MelConfig(), generator="istft",
                           istft=ISTFTGeneratorConfig(dim=16, intermediate_dim=32, n_blocks=2))
    return Vocoder(config).eval()


def tiny_converter(seed: int = 0, plan: ChunkPlan | None = None) -> VoiceConverter:
    return VoiceConverter(tiny_model(seed), tiny_vocoder(), device="cpu", plan=plan)


def save_tiny_model(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """``directory/vc`` and ``directory/vocoder`` holding a tiny random model and vocoder."""
    tiny_model(seed).save_pretrained(directory / "vc")
    tiny_vocoder().save_pretrained(directory / "vocoder")
    return directory / "vc", directory / "vocoder"


def write_voice(path: Path, f0: float = 120.0, seconds: float = 1.0, sr: int = SR, seed: int = 0,
                formants=(700.0, 1200.0, 2600.0), subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synthetic_voice(f0, formants, seconds, sr, seed=seed), sr, subtype=subtype)
    return path


class LocalModel(torch.nn.Module):
    """A VC-model stand-in with no instance norm: purely convolutional, receptive field +-6 frames.

    Chunked and streaming conversion must reproduce its whole-utterance output exactly, which
    isolates the windowing arithmetic from AdaIN-VC's utterance-global statistics.
    """

    receptive_field = 6

    def __init__(self):
        super().__init__()
        self.mel_config = MelConfig()
        self.speaker_dim = 4
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(80, 16, 5, padding=2), torch.nn.Tanh(), torch.nn.Conv1d(16, 80, 9, padding=4)
        )

    def convert(self, mel: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        return mel + self.net(mel) + speaker.mean()

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        return mel.mean(dim=-1)[:, :4]


def whole_mel(audio: np.ndarray, config: MelConfig) -> torch.Tensor:
    """The mel the engine computes: of the input zero-padded to a whole number of hops."""
    frames = math.ceil(audio.size / config.hop_length)
    padded = np.concatenate([audio, np.zeros(frames * config.hop_length - audio.size, np.float32)])
    return MelSpectrogram(config)(torch.from_numpy(padded))


def run_engine(engine: ConversionEngine, audio: np.ndarray, step: int) -> np.ndarray:
    parts = [engine.push(audio[i : i + step]) for i in range(0, audio.size, step)]
    return np.concatenate(parts + [engine.finish()])


# ---- loading ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models"))


def test_from_pretrained_loads_model_and_vocoder(model_dirs):
    vc_dir, vocoder_dir = model_dirs
    vc = VoiceConverter.from_pretrained(vc_dir, vocoder=vocoder_dir, device="cpu")
    assert vc.sample_rate == SR and vc.vocoder.is_neural
    # A bundle directory with vc/ and vocoder/ finds both.
    bundle = VoiceConverter.from_pretrained(vc_dir.parent, device="cpu")
    assert bundle.vocoder.is_neural and bundle.model_sha256 == vc.model_sha256


def test_mel_mismatch_between_model_and_vocoder_is_refused(model_dirs, tmp_path):
    vc_dir, _ = model_dirs
    tiny_vocoder(MelConfig(fmax=7600.0)).save_pretrained(tmp_path / "other")
    with pytest.raises(MelMismatchError, match="fmax"):
        VoiceConverter.from_pretrained(vc_dir, vocoder=tmp_path / "other", device="cpu")


def test_missing_default_model_says_what_to_do(monkeypatch, tmp_path):
    import voiceconv.pretrained as pretrained

    monkeypatch.setattr(pretrained, "default_vc_dir", lambda: tmp_path / "vc")
    with pytest.raises(CheckpointError, match="--model DIR"):
        VoiceConverter.from_pretrained(device="cpu")


def test_absent_default_vocoder_falls_back_to_griffin_lim(model_dirs, monkeypatch, tmp_path, caplog):
    import voiceconv.pretrained as pretrained

    monkeypatch.setattr(pretrained, "default_vocoder_dir", lambda: tmp_path / "none")
    with caplog.at_level(logging.WARNING):
        vc = VoiceConverter.from_pretrained(model_dirs[0], device="cpu")
    assert not vc.vocoder.is_neural
    assert "Griffin-Lim" in caplog.text
    assert not VoiceConverter.from_pretrained(model_dirs[0], vocoder="griffin-lim", device="cpu").vocoder.is_neural


# ---- speakers -----------------------------------------------------------------------------------


def test_embed_speaker_averages_clips_without_normalising(tmp_path):
    vc = tiny_converter()
    a = write_voice(tmp_path / "a.wav", 200, 1.2, seed=1)
    b = write_voice(tmp_path / "b.wav", 210, 1.5, seed=2)
    both = vc.embed_speaker([a, b])
    # The encoder's vectors are averaged (the fitted vector then starts from that mean).
    mean = (vc.embed_speaker(a, adapt_steps=0).embedding + vc.embed_speaker(b, adapt_steps=0).embedding) / 2
    torch.testing.assert_close(both.encoder_embedding, mean)
    torch.testing.assert_close(vc.embed_speaker([a, b], adapt_steps=0).embedding, mean)
    assert both.n_clips == 2 and 2.0 < both.seconds <= 2.7
    assert abs(math.exp(both.log_f0_mean) - 205) < 12  # the synthetic voices' F0 (+-3 % vibrato)
    assert both.model_sha256 == vc.model_sha256
    # One (rate, array) tuple is one clip, not two.
    single = vc.embed_speaker((SR, synthetic_voice(200, seconds=1.2, seed=1)))
    assert single.n_clips == 1


def test_embed_trims_silence(tmp_path):
    vc = tiny_converter()
    voice = synthetic_voice(150, seconds=1.0, seed=3)
    padded = np.concatenate([np.zeros(SR, np.float32), voice, np.zeros(SR, np.float32)])
    speaker = vc.embed_speaker(padded, adapt_steps=0)
    assert speaker.seconds < 1.3  # the two seconds of silence are gone (a 50 ms margin stays)
    alone = vc.embed_speaker(voice, adapt_steps=0).embedding
    untrimmed = vc.embed_speaker(padded, trim=False, adapt_steps=0)
    assert untrimmed.seconds == pytest.approx(3.0)
    assert (speaker.embedding - alone).norm() < 0.5 * (untrimmed.embedding - alone).norm()


def test_speaker_file_round_trip_and_foreign_model_refused(tmp_path):
    vc = tiny_converter(seed=0)
    speaker = vc.embed_speaker([write_voice(tmp_path / "r.wav", 180, 1.0)], name="ref")
    path = speaker.save(tmp_path / "voice.spk")
    loaded = Speaker.load(path)
    torch.testing.assert_close(loaded.embedding, speaker.embedding)
    assert (loaded.n_clips, loaded.name, loaded.model_sha256) == (1, "ref", vc.model_sha256)
    assert loaded.log_f0_mean == pytest.approx(speaker.log_f0_mean)
    source = synthetic_voice(120, seconds=0.6, seed=4)
    assert vc.convert(source, path, pitch=None).shape == (source.size,)  # a .spk path works as the speaker
    other = tiny_converter(seed=1)
    with pytest.raises(SpeakerMismatchError, match="Re-embed"):
        other.convert(source, loaded)
    with pytest.raises(FileExistsError, match="overwrite"):
        speaker.save(path, overwrite=False)


def test_not_a_speaker_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, str(tmp_path / "fake.spk"))
    with pytest.raises(SpeakerFileError, match="not a voiceconv speaker"):
        Speaker.load(tmp_path / "fake.spk")
    (tmp_path / "garbage.spk").write_bytes(b"not safetensors at all")
    with pytest.raises(SpeakerFileError):
        Speaker.load(tmp_path / "garbage.spk")


@pytest.mark.parametrize("audio, message", [
    (np.zeros(SR, np.float32), "silent"),
    (synthetic_voice(150, seconds=0.1), "at least 0.5 s"),
])
def test_bad_references_fail_clearly(audio, message):
    with pytest.raises(AudioError, match=message):
        tiny_converter().embed_speaker(audio)


# ---- conversion ---------------------------------------------------------------------------------


def test_convert_any_input_kind_gives_same_length_output(tmp_path):
    vc = tiny_converter()
    speaker = vc.embed_speaker(synthetic_voice(220, seconds=1.0, seed=5))
    voice = synthetic_voice(120, seconds=1.3, sr=16000, seed=6)
    path = tmp_path / "src16k.wav"
    sf.write(path, voice, 16000, subtype="FLOAT")
    from_path = vc.convert(path, speaker, pitch=None)
    from_tuple = vc.convert((16000, voice), speaker, pitch=None)
    from_tensor = vc.convert(torch.from_numpy(voice), speaker, pitch=None, source_rate=16000)
    assert from_path.dtype == torch.float32 and from_path.dim() == 1
    assert abs(from_path.numel() - round(voice.size * SR / 16000)) <= 1
    torch.testing.assert_close(from_path, from_tuple, atol=1e-4, rtol=0)
    torch.testing.assert_close(from_tuple, from_tensor)
    assert torch.isfinite(from_path).all()


@pytest.mark.parametrize("source, message", [
    ("missing.wav", "not found"),
    ("corrupt.wav", "not a readable audio file"),
    ("short.wav", "conversion needs at least"),
    ("silent.wav", "silent"),
])
def test_bad_sources_fail_clearly(tmp_path, source, message):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(200)))
    write_voice(tmp_path / "short.wav", seconds=0.1)
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    vc = tiny_converter()
    speaker = vc.embed_speaker(synthetic_voice(220, seconds=1.0))
    with pytest.raises(AudioError, match=message):
        vc.convert(tmp_path / source, speaker)


def test_mel_stream_equals_whole_signal_mel():
    config = MelConfig()
    audio = synthetic_voice(130, seconds=1.37, seed=7)
    reference = whole_mel(audio, config)
    for step in (1000, 256, 4097, audio.size):
        stream = MelStream(config)
        frames = [stream.push(audio[i : i + step]) for i in range(0, audio.size, step)] + [stream.finish()]
        torch.testing.assert_close(torch.cat(frames, dim=-1), reference, atol=1e-5, rtol=0)


def test_chunked_conversion_is_exact_for_a_local_model():
    """Windows, crossfades, offsets and alignment: chunked == whole for any push size."""
    model, vocoder = LocalModel().eval(), tiny_vocoder()
    audio = synthetic_voice(120, seconds=4.0, seed=8)
    mel = whole_mel(audio, model.mel_config)
    speaker = torch.zeros(4)
    with torch.inference_mode():
        reference = vocoder.decode(model.convert(mel[None], speaker)[0])[: audio.size].numpy()
    plans = [
        ChunkPlan(model_core=64, model_left=16, model_right=16, model_fade=16, vocoder_core=50, vocoder_fade=512),
        ChunkPlan(model_core=40, model_left=8, model_right=8, model_fade=0, vocoder_core=37, vocoder_fade=0),
        ChunkPlan(model_core=5, model_left=16, model_right=16, model_fade=0, model_first=3, vocoder_core=7,
                  vocoder_first=2, vocoder_fade=0),
    ]
    for plan in plans:
        for step in (3000, 256, 777):
            out = run_engine(ConversionEngine(model, vocoder, speaker, 0.0, plan, torch.device("cpu")), audio, step)
            assert out.size == audio.size
            np.testing.assert_allclose(out, reference, atol=1e-5)


def test_input_up_to_one_window_is_converted_whole():
    vc = tiny_converter(plan=ChunkPlan(model_core=256, model_left=96, model_right=96, model_fade=16))
    speaker = vc.embed_speaker(synthetic_voice(220, seconds=1.0, seed=9))
    audio = synthetic_voice(120, seconds=2.9, seed=10)  # 250 frames: one window
    mel = whole_mel(audio, vc.mel_config)
    with torch.inference_mode():
        reference = vc.vocoder.decode(vc.model.convert(mel[None], speaker.embedding)[0])[: audio.size]
    torch.testing.assert_close(vc.convert(audio, speaker, pitch=None), reference, atol=1e-5, rtol=0)


def test_chunked_conversion_matches_whole_away_from_window_edges():
    """Small windows on a 6 s input: the converted mel stays close to whole-utterance conversion.

    Not exact: each window's instance norm uses its own frames' statistics (see voiceconv.convert.engine).
    The bound is relative to how far conversion moves the mel, and the same output misplaced by
    8 frames must be clearly worse, so the test checks placement as well as closeness.
    """
    model = tiny_model()
    assert model_receptive_field(model) == 71
    voices = [(110, (600, 1100, 2500)), (180, (900, 1700, 3000)), (140, (500, 1500, 2400)), (220, (800, 1300, 2800))]
    audio = np.concatenate([synthetic_voice(f0, formants, 0.75, seed=i) for i, (f0, formants) in enumerate(voices * 2)])
    mel = whole_mel(audio, model.mel_config)
    speaker = torch.randn(model.speaker_dim)
    with torch.inference_mode():
        whole = model.convert(mel[None], speaker)[0]
    plan = ChunkPlan(model_core=128, model_left=96, model_right=96, model_fade=32)
    engine = ConversionEngine(model, tiny_vocoder(), speaker, 0.0, plan, torch.device("cpu"))
    engine.record_mel = []
    out = run_engine(engine, audio, 4096)
    chunked = torch.cat(engine.record_mel, dim=-1)
    assert out.size == audio.size and chunked.shape == whole.shape
    change = (whole - mel).abs().mean()
    error = (chunked - whole).abs().mean()
    misplaced = (chunked[:, 8:] - whole[:, :-8]).abs().mean()
    assert error < 0.1 * change, (error, change)
    assert error < 0.5 * misplaced, (error, misplaced)


def test_long_input_keeps_buffers_bounded():
    """Sixty seconds through small windows: no stage holds more than about one window of input."""
    plan = ChunkPlan(model_core=256, model_left=64, model_right=64, model_fade=32, vocoder_core=256)
    model, vocoder = LocalModel().eval(), tiny_vocoder()
    engine = ConversionEngine(model, vocoder, torch.zeros(4), 0.0, plan, torch.device("cpu"))
    audio = synthetic_voice(120, seconds=60.0, seed=13)
    largest = 0
    total = 0
    for i in range(0, audio.size, SR):
        total += engine.push(audio[i : i + SR]).size
        held = [stage._buffer.shape[-1] for stage in (engine.model_stage, engine.vocoder_stage)
                if stage._buffer is not None]
        largest = max(largest, *held, engine.mel._buffer.size // 256)
    total += engine.finish().size
    assert total == audio.size
    assert largest < 256 + 2 * 64 + 8 + SR // 256 + 8


def test_convert_to_file_is_atomic_and_refuses_overwrite(tmp_path):
    vc = tiny_converter()
    speaker = vc.embed_speaker(synthetic_voice(220, seconds=1.0))
    source = write_voice(tmp_path / "src.wav", 120, 1.1)
    out = vc.convert_to_file(source, speaker, tmp_path / "out" / "x.flac", pitch=None)
    info = sf.info(out)
    assert info.samplerate == SR and abs(info.frames - round(1.1 * SR)) <= 1
    with pytest.raises(FileExistsError, match="--overwrite"):
        vc.convert_to_file(source, speaker, out)
    vc.convert_to_file(source, speaker, out, overwrite=True)
    with pytest.raises(AudioError):
        vc.convert_to_file(tmp_path / "missing.wav", speaker, tmp_path / "out" / "y.wav")
    with pytest.raises(VoiceconvError, match="extension"):
        vc.convert_to_file(source, speaker, tmp_path / "out" / "z.xyz")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.flac"]  # no temporary files left


def test_cli_convert_and_embed(tmp_path, model_dirs, capsys):
    """Acceptance 1 in miniature: a 10 s recording, a 3-clip target, an output of the same duration."""
    from voiceconv.cli import main

    source = write_voice(tmp_path / "talk.wav", 120, 10.0, sr=44100, seed=20)
    refs = [str(write_voice(tmp_path / f"ref{k}.wav", 210, 1.0, seed=30 + k)) for k in range(3)]
    model = ["--model", str(model_dirs[0]), "--vocoder", str(model_dirs[1])]
    out = tmp_path / "converted.wav"
    assert main(["convert", str(source), "--target", *refs, "-o", str(out), *model]) == 0
    assert sf.info(out).duration == pytest.approx(10.0, abs=256 / SR) and sf.info(out).samplerate == SR
    assert main(["convert", str(source), "--target", *refs, "-o", str(out), *model]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["embed", *refs, "-o", str(tmp_path / "voice.spk"), *model]) == 0
    assert main(["convert", str(source), str(tmp_path / "ref0.wav"), "--speaker", str(tmp_path / "voice.spk"),
                 "-o", str(tmp_path / "many"), "--pitch", "-2", *model]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["ref0.wav", "talk.wav"]
    assert main(["convert", str(source), "--target", refs[0], "-o", str(tmp_path / "x.wav"), "--pitch", "up",
                 *model]) == 2
