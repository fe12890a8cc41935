"""The Gradio web demo (voiceconv/demo_app.py) driven through its HTTP API with gradio_client.

A tiny random-init VC model (conf/debug.yaml) and a tiny random-init iSTFT vocoder are saved in
tmp_path as a ``vc/`` + ``vocoder/`` bundle, so the tests need no trained weights and never read
the shipped ones; the audio is synthetic. The served app is the same one ``voiceconv demo`` runs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import synthetic_voice

import voiceconv
from voiceconv.config import from_dict, load_yaml

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is needed to drive the demo's API")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZE_LIMIT = 300_000  # bytes: a small upload limit, so a 10 s 22 kHz WAV (441 KB) is over it
MAX_SECONDS = 12.0  # a small duration limit, so a 13 s clip is too long
SOURCE_SECONDS = 3.0
MODEL_RATE = 22050  # the default mel config of the tiny model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_bundle(directory: Path, neural_vocoder: bool = True) -> Path:
    """``directory/vc`` (tiny VCModel from conf/debug.yaml) and, optionally, ``directory/vocoder``."""
    from voiceconv.models import VCConfig, VCModel
    from voiceconv.vocoder.generator import ISTFTGeneratorConfig
    from voiceconv.vocoder.model import Vocoder, VocoderConfig

    torch.manual_seed(0)
    config = from_dict(VCConfig, load_yaml(Path(voiceconv.__file__).parent / "conf" / "debug.yaml")["model"])
    VCModel(config).save_pretrained(directory / "vc")
    if neural_vocoder:
        tiny = ISTFTGeneratorConfig(dim=16, intermediate_dim=32, n_blocks=1)
        Vocoder(VocoderConfig(istft=tiny)).save_pretrained(directory / "vocoder")
    return directory


def write_clips(directory: Path) -> SimpleNamespace:
    """Good and bad inputs for the demo, all under SIZE_LIMIT except ``oversize``."""
    directory.mkdir(parents=True, exist_ok=True)
    clips = SimpleNamespace(
        source=directory / "source.wav",
        reference=directory / "reference.wav",
        not_audio=directory / "notes.wav",
        short=directory / "short.wav",
        silence=directory / "silence.wav",
        too_long=directory / "long.wav",
        oversize=directory / "oversize.wav",
    )
    sf.write(clips.source, synthetic_voice(110.0, seconds=SOURCE_SECONDS, sr=16000), 16000, subtype="PCM_16")
    sf.write(clips.reference, synthetic_voice(230.0, (900.0, 1700.0, 3000.0), seconds=2.5, sr=16000, seed=1),
             16000, subtype="PCM_16")
    clips.not_audio.write_text("These are my meeting notes, not a recording.\n" * 40)
    sf.write(clips.short, synthetic_voice(seconds=0.2, sr=16000), 16000, subtype="PCM_16")
    sf.write(clips.silence, np.zeros(10 * 8000, np.int16), 8000, subtype="PCM_16")  # 10 s, 160 KB
    sf.write(clips.too_long, synthetic_voice(seconds=MAX_SECONDS + 1, sr=8000), 8000, subtype="PCM_16")  # 208 KB
    sf.write(clips.oversize, synthetic_voice(seconds=10.0, sr=22050), 22050, subtype="PCM_16")  # 441 KB
    assert clips.oversize.stat().st_size > SIZE_LIMIT > clips.silence.stat().st_size
    return clips


@contextlib.contextmanager
def gradio_environment(root: Path):
    """Gradio's temp area inside ``root`` and analytics off, restored afterwards."""
    saved = {key: os.environ.get(key) for key in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio_tmp")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    with gradio_environment(tmp_path_factory.mktemp("demo")) as root:
        yield root


@pytest.fixture(scope="module")
def server(demo_env):
    """The demo served in this process on a free port (so tests can look at its cache)."""
    from voiceconv.demo_app import DemoConfig, launch

    bundle = make_bundle(demo_env / "bundle")
    clips = write_clips(demo_env / "clips")
    config = DemoConfig(models=[str(bundle)], max_file_size=SIZE_LIMIT, max_seconds=MAX_SECONDS, delete_cache=None)
    demo, backend, url = launch(config, port=free_port(), block=False, quiet=True)
    yield SimpleNamespace(url=url, backend=backend, demo=demo, clips=clips, model="bundle")
    demo.close()


def convert(client: Client, source, *, target_mode="gallery", voice="librispeech_196", pitch="auto",
            semitones=0, vocoder="neural", model="bundle"):
    return client.predict(handle_file(str(source)), target_mode, voice, pitch, semitones, vocoder, model,
                          api_name="/convert")


def audio_seconds(path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


# ---------------------------------------------------------------------------------------------------
# acceptance 1: the command starts and converts through the API


@pytest.mark.slow
def test_voiceconv_demo_command_serves_and_converts(tmp_path):
    """``voiceconv demo --model DIR`` in a subprocess: the page answers and a conversion has the source's length."""
    bundle = make_bundle(tmp_path / "bundle")
    clips = write_clips(tmp_path / "clips")
    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp_path / "gradio_tmp"), GRADIO_ANALYTICS_ENABLED="False",
               OMP_NUM_THREADS="1")
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "voiceconv.cli", "demo", "--model", str(bundle), "--port", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        client = None
        deadline = time.monotonic() + 120
        while client is None:
            assert process.poll() is None, f"the demo exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"the demo did not come up in 120 s:\n{log_path.read_text()}"
            try:
                client = Client(url, verbose=False)
            except Exception:
                time.sleep(0.5)
        result, info, _ = convert(client, clips.source)
        assert audio_seconds(result) == pytest.approx(SOURCE_SECONDS, abs=0.02)
        assert sf.info(result).samplerate == MODEL_RATE
        assert "speaker similarity" in info
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Running on local URL:  http://127.0.0.1:" in log_path.read_text()


@pytest.mark.skipif(not (Path(voiceconv.__file__).parent / "pretrained" / "vc" / "model.safetensors").is_file(),
                    reason="no shipped default model in voiceconv/pretrained/vc yet")
def test_shipped_default_model_serves_the_demo(tmp_path, demo_env):
    """With no --model, the demo loads the shipped model (and its vocoder) and converts."""
    from voiceconv.demo_app import DemoBackend, DemoConfig

    backend = DemoBackend(DemoConfig())
    assert backend.model_names == ["default"]
    clips = write_clips(tmp_path / "clips")
    result = backend.convert(str(clips.source), backend.gallery[0])
    assert result.audio.size / result.sample_rate == pytest.approx(SOURCE_SECONDS, abs=0.02)
    assert np.isfinite(result.audio).all()


def test_standalone_script_and_cli_defaults():
    """demo/app.py takes the same options; the defaults bind 127.0.0.1 with no share link."""
    from voiceconv.cli import build_parser

    args = build_parser(["demo"]).parse_args(["demo"])
    assert (args.host, args.port, args.share, args.model, args.vocoder) == ("127.0.0.1", 7860, False, [], None)
    args = build_parser(["demo"]).parse_args(["demo", "--model", "a", "--model", "b", "--max-file-size", "2.5"])
    assert args.model == ["a", "b"] and args.max_file_size == 2_500_000
    out = subprocess.run([sys.executable, str(REPO / "demo" / "app.py"), "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ("--model", "--vocoder", "--host", "--port", "--share", "--max-file-size"):
        assert option in out.stdout


# ---------------------------------------------------------------------------------------------------
# conversions


@pytest.mark.parametrize("vocoder", ["neural", "griffin-lim"])
def test_convert_returns_audio_similarity_time_and_figure(server, vocoder):
    client = Client(server.url, verbose=False)
    result, info, plot = convert(client, server.clips.source, vocoder=vocoder, pitch="semitones", semitones=2)
    assert audio_seconds(result) == pytest.approx(SOURCE_SECONDS, abs=0.02)
    audio, rate = sf.read(result, dtype="float32")
    assert rate == MODEL_RATE and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert "| **result** |" in info and "| source (before conversion) |" in info
    assert "Processing time:" in info and "real-time factor" in info
    assert ("Griffin-Lim" in info) == (vocoder == "griffin-lim")  # the page says which vocoder made it
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")


def test_gallery_voice_is_encoded_once(server):
    client = Client(server.url, verbose=False)
    cache = server.backend.cache
    convert(client, server.clips.source, voice="librispeech_2136")
    encodes = cache.encodes
    convert(client, server.clips.source, voice="librispeech_2136", pitch="off")
    convert(Client(server.url, verbose=False), server.clips.source, voice="librispeech_2136", vocoder="griffin-lim")
    assert cache.encodes == encodes, "a cached gallery voice was encoded again"
    convert(client, server.clips.source, voice="librispeech_1116")
    assert cache.encodes == encodes + 1


def test_custom_voice_is_kept_for_the_visit_only(server):
    visitor = Client(server.url, verbose=False)
    status, mode = visitor.predict([handle_file(str(server.clips.reference))], None, api_name="/set_reference")
    assert mode == "custom" and "kept for the rest of this visit" in status
    for pitch in ("auto", "off"):  # the voice stays set across conversions of the same session
        result, info, _ = convert(visitor, server.clips.source, target_mode="custom", pitch=pitch)
        assert audio_seconds(result) == pytest.approx(SOURCE_SECONDS, abs=0.02)
    stranger = Client(server.url, verbose=False)
    with pytest.raises(AppError, match="No custom voice yet"):
        convert(stranger, server.clips.source, target_mode="custom")
    visitor.predict(api_name="/clear_reference")
    with pytest.raises(AppError, match="No custom voice yet"):
        convert(visitor, server.clips.source, target_mode="custom")


def test_progress_is_reported_in_steps(server):
    steps = []
    server.backend.convert(str(server.clips.source), server.backend.gallery[0],
                           progress=lambda fraction, text: steps.append((fraction, text)))
    fractions = [fraction for fraction, _ in steps]
    assert len(steps) >= 4 and fractions == sorted(fractions) and all(text for _, text in steps)


def test_queue_runs_one_conversion_at_a_time(server, monkeypatch):
    backend = server.backend
    original = backend.convert
    active, overlap, lock = [0], [0], threading.Lock()

    def counting(*args, **kwargs):
        with lock:
            active[0] += 1
            overlap[0] = max(overlap[0], active[0])
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(backend, "convert", counting)
    client = Client(server.url, verbose=False)
    jobs = [client.submit(handle_file(str(server.clips.source)), "gallery", "librispeech_196", "off", 0,
                          "griffin-lim", "bundle", api_name="/convert") for _ in range(3)]
    results = [job.result(timeout=120) for job in jobs]
    assert len(results) == 3 and all(audio_seconds(r[0]) == pytest.approx(SOURCE_SECONDS, abs=0.02) for r in results)
    assert overlap[0] == 1


# ---------------------------------------------------------------------------------------------------
# acceptance 4: bad inputs get a readable message and the app keeps serving


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        ("not_audio", r"Source: notes\.wav: not a readable audio file .*WAV, FLAC, OGG/Vorbis or MP3"),
        ("short", r"Source: short\.wav: audio is 200(\.0)? ms long.* at least 500 ms"),
        ("silence", r"Source: silence\.wav: audio is silent"),
        ("too_long", r"Source: long\.wav is 13\.0 s long; this demo accepts up to 12 s"),
    ],
)
def test_bad_source_gets_a_readable_message(server, clip, message):
    client = Client(server.url, verbose=False)
    with pytest.raises(AppError, match=message) as caught:
        convert(client, getattr(server.clips, clip))
    text = str(caught.value)
    assert "Traceback" not in text and "gradio_tmp" not in text, "internals leaked into the message"
    result, _, _ = convert(client, server.clips.source)  # the app keeps serving
    assert audio_seconds(result) == pytest.approx(SOURCE_SECONDS, abs=0.02)


@pytest.mark.parametrize(("clip", "message"), [("silence", "is silent"), ("short", "at least 500 ms")])
def test_bad_reference_clip_gets_a_readable_message(server, clip, message):
    client = Client(server.url, verbose=False)
    with pytest.raises(AppError, match=f"Reference clip .*{message}"):
        client.predict([handle_file(str(getattr(server.clips, clip)))], None, api_name="/set_reference")
    with pytest.raises(AppError, match="Add one or more reference clips"):
        client.predict([], None, api_name="/set_reference")


def test_upload_over_the_size_limit_is_refused(server):
    import httpx

    with open(server.clips.oversize, "rb") as handle:
        response = httpx.post(server.url + "gradio_api/upload", files={"files": ("oversize.wav", handle, "audio/wav")})
    assert response.status_code == 413
    assert f"maximum allowed size of {SIZE_LIMIT} bytes" in response.text
    client = Client(server.url, verbose=False)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks before sending
        convert(client, server.clips.oversize)
    result, _, _ = convert(client, server.clips.source)
    assert audio_seconds(result) == pytest.approx(SOURCE_SECONDS, abs=0.02)


def test_only_uploads_and_the_gallery_are_served(server, monkeypatch):
    import httpx

    import voiceconv.demo_app as demo_app

    assert httpx.get(server.url + "gradio_api/file=/etc/passwd").status_code == 403
    assert httpx.get(server.url + f"gradio_api/file={REPO / 'pyproject.toml'}").status_code == 403
    gallery_file = server.backend.gallery[0].path
    response = httpx.get(server.url + f"gradio_api/file={gallery_file}")
    assert response.status_code == 200 and response.content == gallery_file.read_bytes()

    # A request naming a server path instead of an upload never reaches the audio loader.
    opened = []
    original = demo_app.load_clip
    monkeypatch.setattr(demo_app, "load_clip", lambda path, *a, **k: opened.append(path) or original(path, *a, **k))
    payload = [{"path": str(server.clips.source), "meta": {"_type": "gradio.FileData"}}, "gallery",
               "librispeech_196", "auto", 0, "neural", "bundle"]
    event = httpx.post(server.url + "gradio_api/call/convert", json={"data": payload}).json()["event_id"]
    stream = httpx.get(server.url + f"gradio_api/call/convert/{event}", timeout=60).text
    assert "event: error" in stream and opened == []


def test_server_binds_localhost_without_share_or_analytics(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert server.demo.share is False
    assert server.demo.analytics_enabled is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


# ---------------------------------------------------------------------------------------------------
# backend pieces without a server


def test_griffin_lim_fallback_is_reported(tmp_path, demo_env):
    from voiceconv.demo_app import DemoBackend, DemoConfig, result_markdown

    bundle = make_bundle(tmp_path / "no_vocoder", neural_vocoder=False)
    clips = write_clips(tmp_path / "clips")
    backend = DemoBackend(DemoConfig(models=[str(bundle)]))
    assert backend.vocoder_names == ["griffin-lim"] and backend.fallback_models == {"no_vocoder"}
    result = backend.convert(str(clips.source), backend.gallery[0], pitch=None)
    assert result.vocoder_fallback and not result.neural_vocoder
    assert "Griffin-Lim fallback" in result_markdown(result)
    # Griffin-Lim named on purpose is a choice, not a fallback.
    chosen = DemoBackend(DemoConfig(models=[str(bundle)], vocoder="griffin-lim"))
    assert chosen.fallback_models == set()


def test_several_models_are_offered_by_name(tmp_path, demo_env):
    from voiceconv.demo_app import DemoBackend, DemoConfig

    first = make_bundle(tmp_path / "a" / "run", neural_vocoder=False)
    second = make_bundle(tmp_path / "b" / "run", neural_vocoder=False)
    backend = DemoBackend(DemoConfig(models=[str(first), str(second)]))
    assert backend.model_names == ["run", "b/run"]
    clips = write_clips(tmp_path / "clips")
    result = backend.convert(str(clips.source), backend.gallery[1], model="b/run", pitch=None)
    assert result.model == "b/run"
    assert backend.cache.encodes == 1 and ("b/run", backend.gallery[1].id) in backend.cache._items


def test_mel_figure_shares_one_colour_scale():
    from voiceconv.demo_app import mel_figure

    rng = np.random.default_rng(0)
    mels = [rng.normal(-5, 1, (80, 50)), rng.normal(-3, 2, (80, 70)), rng.normal(-8, 1, (80, 50))]
    figure = mel_figure(mels, ["source", "reference", "result"], 22050, 256)
    images = [image for ax in figure.axes for image in ax.get_images()]
    assert len(images) == 3
    low, high = min(m.min() for m in mels), max(m.max() for m in mels)
    for image in images:
        assert image.get_clim() == pytest.approx((low, high))
    assert len(figure.axes) == 4  # three panels and one shared colour bar


def test_gallery_is_bundled_with_attribution():
    from voiceconv.demo_app import GALLERY_DIR, load_gallery

    voices = load_gallery()
    assert len(voices) == 4
    attribution = (GALLERY_DIR / "ATTRIBUTION.md").read_text()
    for voice in voices:
        info = sf.info(str(voice.path))
        assert info.samplerate == 16000 and info.channels == 1 and 3.0 <= info.duration <= 5.0
        assert voice.path.stat().st_size < 200_000
        assert voice.license == "CC-BY-4.0" and "LibriSpeech" in voice.attribution
        assert voice.path.name in attribution


def test_config_rejects_impossible_limits():
    from voiceconv.demo_app import DemoConfig
    from voiceconv.errors import VoiceconvError

    with pytest.raises(VoiceconvError, match="min_seconds < max_seconds"):
        DemoConfig(min_seconds=5, max_seconds=2)
    with pytest.raises(VoiceconvError, match="max_file_size"):
        DemoConfig(max_file_size=0)
    with pytest.raises(VoiceconvError, match="concurrency_limit"):
        DemoConfig(concurrency_limit=0)


def test_result_text_reports_vocoder_and_unmeasurable_similarity():
    from voiceconv.demo_app import ConversionResult, result_markdown

    result = ConversionResult(audio=np.zeros(10, np.float32), sample_rate=22050, figure=None,
                              similarity_result=float("nan"), similarity_source=0.25, seconds_convert=0.5,
                              seconds_total=0.8, source_seconds=2.0, neural_vocoder=True, vocoder_fallback=False,
                              model="m", target="t")
    text = result_markdown(result)
    assert "| **result** | **n/a** |" in text and "| source (before conversion) | 0.250 |" in text
    assert "real-time factor 0.25" in text and "Griffin-Lim" not in text
    result.neural_vocoder = False
    assert "Made with the **Griffin-Lim** vocoder" in result_markdown(result)
    result.vocoder_fallback = True
    assert "Griffin-Lim fallback vocoder" in result_markdown(result)


def test_similarity_of_a_silent_result_is_not_an_error(server):
    from voiceconv.demo_app import _similarity

    converter = server.backend.converter(None, None)
    speaker = server.backend.gallery_speaker(server.model, server.backend.gallery[0])
    assert np.isnan(_similarity(converter, np.zeros(MODEL_RATE, np.float32), speaker))
    assert -1.0 <= _similarity(converter, synthetic_voice(seconds=1.0, sr=MODEL_RATE), speaker) <= 1.0
