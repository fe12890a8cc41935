"""The Gradio web demo (voiceconv/demo/app.py) driven through its HTTP API with gradio_client.

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
    from voiceconv.demo.app import launch
    from voiceconv.demo.config import DemoConfig

    bundle = make_bundle(demo_env / "bundle")
    clips = write_clips(demo_env / "clips")
    config = DemoConfig(models=[str(bundle)], max_file_size=SIZE_LIMIT, max_seconds=MAX_SECONDS, delete_cache=None)
    demo, backend, url = launch(config, port=free_port(), block=False, quiet=True)
    yield SimpleNamespace(url=url, backend=backend, demo=demo, clips=clips, model="bundle")
    demo.close()


def convert(client: Client, source, *, target_mode="gallery", voice="librispeech_196", pitch="auto",
            semitones=0, vocoder="neural", model="bundle", blend="none", blend_weight=0.5):
    return client.predict(handle_file(str(source)), target_mode, voice, pitch, semitones, vocoder, model, blend,
                          blend_weight, api_name="/convert")


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
    from voiceconv.demo.backend import DemoBackend
    from voiceconv.demo.config import DemoConfig

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
    assert "Target: **Male voice B (LibriSpeech speaker 196)**" in info
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
                          "griffin-lim", "bundle", "none", 0.5, api_name="/convert") for _ in range(3)]
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

    import voiceconv.demo.backend as demo_app

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
               "librispeech_196", "auto", 0, "neural", "bundle", "none", 0.5]
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
    from voiceconv.demo.app import result_markdown
    from voiceconv.demo.backend import DemoBackend
    from voiceconv.demo.config import DemoConfig

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
    from voiceconv.demo.backend import DemoBackend
    from voiceconv.demo.config import DemoConfig

    first = make_bundle(tmp_path / "a" / "run", neural_vocoder=False)
    second = make_bundle(tmp_path / "b" / "run", neural_vocoder=False)
    backend = DemoBackend(DemoConfig(models=[str(first), str(second)]))
    assert backend.model_names == ["run", "b/run"]
    clips = write_clips(tmp_path / "clips")
    result = backend.convert(str(clips.source), backend.gallery[1], model="b/run", pitch=None)
    assert result.model == "b/run"
    assert backend.cache.encodes == 1 and ("b/run", backend.gallery[1].id) in backend.cache._items


def test_mel_figure_shares_one_colour_scale():
    from voiceconv.demo.figures import mel_figure

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
    from voiceconv.demo.config import GALLERY_DIR
    from voiceconv.demo.inputs import load_gallery

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
    from voiceconv.demo.config import DemoConfig
    from voiceconv.errors import VoiceconvError

    with pytest.raises(VoiceconvError, match="min_seconds < max_seconds"):
        DemoConfig(min_seconds=5, max_seconds=2)
    with pytest.raises(VoiceconvError, match="max_file_size"):
        DemoConfig(max_file_size=0)
    with pytest.raises(VoiceconvError, match="concurrency_limit"):
        DemoConfig(concurrency_limit=0)


def result_with(similarity, **changes):
    """A ConversionResult for unit tests of the page text (no model needed)."""
    from voiceconv.demo.backend import ConversionResult

    fields = dict(audio=np.zeros(10, np.float32), sample_rate=22050, figure=None, similarity=similarity,
                  seconds_convert=0.5, seconds_total=0.8, source_seconds=2.0, neural_vocoder=True,
                  vocoder_fallback=False, model="m", target="t")
    return ConversionResult(**{**fields, **changes})


def test_result_text_reports_vocoder_and_unmeasurable_similarity():
    from voiceconv.demo.app import result_markdown
    from voiceconv.demo.similarity import OWN, Similarity

    result = result_with(Similarity(OWN, ["t"], [float("nan")], [0.25]))
    text = result_markdown(result)
    assert "| **result** | **n/a** |" in text and "| source (before conversion) | 0.250 |" in text
    assert "real-time factor 0.25" in text and "Griffin-Lim" not in text
    result.neural_vocoder = False
    assert "Made with the **Griffin-Lim** vocoder" in result_markdown(result)
    result.vocoder_fallback = True
    assert "Griffin-Lim fallback vocoder" in result_markdown(result)


def test_similarity_of_a_silent_result_is_not_an_error(server):
    """Neither the model's own encoder nor the judge fails on a clip with nothing to embed: NaN, shown as n/a."""
    from voiceconv.demo.similarity import own_similarity

    converter = server.backend.converter(None, None)
    speaker = server.backend.gallery_speaker(server.model, server.backend.gallery[0])
    assert np.isnan(own_similarity(converter, np.zeros(MODEL_RATE, np.float32), speaker))
    assert -1.0 <= own_similarity(converter, synthetic_voice(seconds=1.0, sr=MODEL_RATE), speaker) <= 1.0


# ---------------------------------------------------------------------------------------------------
# issue 16: a similarity the visitor can trust


def toy_calibration():
    from voiceconv.demo.calibration import SimilarityCalibration

    rng = np.random.default_rng(0)
    return SimilarityCalibration.from_cosines(rng.uniform(0.90, 1.0, 500), rng.uniform(0.6, 0.9, 500),
                                              method="toy", data={"speakers": 12})


def test_similarity_text_names_the_measure_and_how_to_read_it():
    """Judge, calibrated own encoder and raw own encoder each get their own label; none looks like the others."""
    from voiceconv.demo.app import result_markdown
    from voiceconv.demo.similarity import CALIBRATED, JUDGE, OWN, Similarity

    judge = result_markdown(result_with(Similarity(JUDGE, ["t"], [0.712], [0.55])))
    assert "| speaker similarity to the target | Resemblyzer cosine |" in judge
    assert "| **result** | **0.712** |" in judge and "| source (before conversion) | 0.550 |" in judge
    assert "independent speaker-verification model (Resemblyzer), not the converter's own encoder" in judge
    assert "same speaker score 0.81 or more at the equal-error-rate threshold (EER 1.7 %" in judge
    assert "the shipped model's conversions average 0.78 and unconverted sources 0.57" in judge
    assert "uncalibrated" not in judge and "same-speaker pairs are" not in judge

    calibration = toy_calibration()
    calibrated = result_markdown(result_with(Similarity(CALIBRATED, ["t"], [0.95], [0.75], calibration)))
    same, different = calibration.share_below(0.95)
    assert 0.4 < same < 0.6 and different == 1.0
    assert "| own-encoder cosine | closer than real same-speaker pairs |" in calibrated
    assert f"| **result** | **0.950** | **{100 * same:.0f} %** |" in calibrated
    assert (f"the result is closer to the target than {100 * same:.0f} % of real same-speaker pairs are "
            "(and than 100 % of different-speaker pairs)") in calibrated
    assert "the source, before conversion, was closer to the target than 0 % of real same-speaker pairs" in calibrated
    assert "12 training speakers" in calibrated and "Resemblyzer cosine" not in calibrated
    calibration.center = np.full(4, 0.1)  # a centred calibration says so in the header and the note
    centred = result_markdown(result_with(Similarity(CALIBRATED, ["t"], [0.95], [0.75], calibration)))
    assert "| own-encoder cosine, centred | closer than real same-speaker pairs |" in centred
    assert "after the direction all voices share is taken out (a centred cosine)" in centred

    raw = result_markdown(result_with(Similarity(OWN, ["t"], [0.99], [0.9])))
    assert "| own-encoder cosine (uncalibrated) |" in raw
    assert "Uncalibrated: measured with the converter's own speaker encoder" in raw
    assert "not comparable across models" in raw and "same-speaker pairs" not in raw
    for text in (judge, calibrated, raw):
        assert "Display only: it does not change the conversion." in text

    # A blend gets a column per voice, named after it.
    blend = result_markdown(result_with(Similarity(JUDGE, ["A (50 %)", "B (50 %)"], [0.6, float("nan")],
                                                   [0.5, 0.4]), target="a blend of 50 % A and 50 % B"))
    assert "| speaker similarity to the target (Resemblyzer cosine) | to A (50 %) | to B (50 %) |" in blend
    assert "| **result** | **0.600** | **n/a** |" in blend and "Target: **a blend of 50 % A and 50 % B**" in blend


def test_backend_uses_the_judge_else_the_calibration_else_the_raw_score(tmp_path, demo_env, monkeypatch):
    """Which measure a conversion gets, with the judge importable or not and a calibration file or none."""
    import voiceconv.demo.backend as demo_app
    from voiceconv.checkpoint import read_config
    from voiceconv.demo.app import result_markdown
    from voiceconv.demo.calibration import SimilarityCalibration

    bundle = make_bundle(tmp_path / "bundle", neural_vocoder=False)
    clips = write_clips(tmp_path / "clips")
    monkeypatch.setattr(demo_app, "judge_available", lambda: False)
    raw = demo_app.DemoBackend(demo_app.DemoConfig(models=[str(bundle)]))
    assert raw.calibrations == {"bundle": None} and raw.speaker_judge() is None
    result = raw.convert(str(clips.source), raw.gallery[0])
    assert result.similarity.method == demo_app.OWN and -1 <= result.similarity.result[0] <= 1

    calibration = toy_calibration()
    calibration.model_file_sha256 = "0" * 64  # made for other weights: ignored, with a log line
    calibration.save(bundle / "vc")
    assert demo_app.DemoBackend(demo_app.DemoConfig(models=[str(bundle)])).calibrations == {"bundle": None}
    calibration.model_file_sha256 = read_config(bundle / "vc")["sha256"]
    calibration.save(bundle / "vc")
    calibrated = demo_app.DemoBackend(demo_app.DemoConfig(models=[str(bundle)]))
    assert SimilarityCalibration.load(bundle / "vc").same == pytest.approx(calibration.same)
    result = calibrated.convert(str(clips.source), calibrated.gallery[0])
    assert result.similarity.method == demo_app.CALIBRATED and result.similarity.calibration is not None
    assert "same-speaker pairs" in result_markdown(result)
    (bundle / "vc" / "similarity_calibration.json").write_text("{not json")  # unusable: shown uncalibrated
    assert demo_app.DemoBackend(demo_app.DemoConfig(models=[str(bundle)])).calibrations == {"bundle": None}

    # With a judge (a stand-in, so the test does not depend on the [eval] extra) the judge wins, and a
    # judge that fails on a clip gives n/a, never a failed conversion.
    class Judge:
        def __init__(self, fail: bool):
            self.fail, self.calls = fail, 0

        def embed(self, audio):
            self.calls += 1
            if self.fail:
                raise RuntimeError("judge exploded")
            spectrum = np.abs(np.fft.rfft(audio[:16000], 512))[:256]
            return spectrum / np.linalg.norm(spectrum)

    calibrated._judge = Judge(fail=False)
    result = calibrated.convert(str(clips.source), calibrated.gallery[0])
    assert result.similarity.method == demo_app.JUDGE and 0 < result.similarity.result[0] <= 1
    calls = calibrated._judge.calls
    calibrated.convert(str(clips.source), calibrated.gallery[0])
    assert calibrated._judge.calls - calls == 2, "the gallery clip's judge embedding was not kept"
    calibrated._judge = Judge(fail=True)
    calibrated._gallery_notes.clear()
    result = calibrated.convert(str(clips.source), calibrated.gallery[0])
    assert result.audio.size and np.isnan(result.similarity.result[0])
    assert "| **result** | **n/a** |" in result_markdown(result)


def test_judge_is_loaded_once_and_never_fails_the_page(tmp_path, demo_env, monkeypatch):
    """The real Resemblyzer judge when it is installed: loaded on first use, once per backend."""
    import voiceconv.demo.backend as demo_app
    from voiceconv.demo.app import result_markdown

    if not demo_app.judge_available():
        pytest.skip("the Resemblyzer judge ([eval] extra) is not installed")
    loads = []
    from voiceconv.evaluation import judges

    original = judges.SpeakerJudge.__init__
    monkeypatch.setattr(judges.SpeakerJudge, "__init__", lambda self: loads.append(1) or original(self))
    backend = demo_app.DemoBackend(demo_app.DemoConfig(models=[str(make_bundle(tmp_path / "b", False))]))
    assert loads == []  # lazily: nothing at start-up
    clips = write_clips(tmp_path / "clips")
    for _ in range(2):
        result = backend.convert(str(clips.source), backend.gallery[0])
        assert result.similarity.method == demo_app.JUDGE
    assert loads == [1]
    assert all(-1 <= value <= 1 for value in result.similarity.result + result.similarity.source)
    assert "independent speaker-verification model (Resemblyzer)" in result_markdown(result)


def test_similarity_calibration_from_corpus_spans(tmp_path):
    """pair_cosines draws same-speaker pairs from two spans of one speaker and different-speaker pairs
    across speakers; the saved quantiles round-trip and rank a cosine among them."""
    from voiceconv.demo.calibration import FILE_NAME, SimilarityCalibration, pair_cosines
    from voiceconv.errors import CheckpointError

    rng = np.random.default_rng(0)
    voices = {"a": rng.normal(size=8), "b": rng.normal(size=8), "c": rng.normal(size=8)}
    utterances = [SimpleNamespace(speaker=s, n_frames=n) for s, n in
                  [("a", 600), ("a", 300), ("b", 400), ("c", 200)]]  # c: one utterance, two 1 s halves fit
    spans = []

    class Corpus:
        mel_config = SimpleNamespace(sample_rate=22050, hop_length=256)

        def __init__(self):
            self.utterances = utterances

        def indices_for(self, speakers):
            return [i for i, u in enumerate(utterances) if u.speaker in speakers]

        def mel(self, index, start, length):
            assert 0 <= start and start + length <= utterances[index].n_frames and length >= 86
            spans.append((index, start, length))
            noise = np.random.default_rng(len(spans)).normal(scale=0.3, size=8)
            return np.tile((voices[utterances[index].speaker] + noise)[:, None], (1, length))  # (n_mels, T)

    same, different = pair_cosines(Corpus(), lambda mel: mel[:, 0], ["a", "b", "c"], n_pairs=40, seed=1)
    assert len(same) == len(different) == 40
    assert np.mean(same) > 0.8 > np.mean(different)
    assert {index for index, _, _ in spans} == {0, 1, 2, 3}
    calibration = SimilarityCalibration.from_cosines(same, different, method="test", data={"speakers": 3})
    assert calibration.same.size == 101 and np.all(np.diff(calibration.same) >= 0)
    calibration.save(tmp_path)
    loaded = SimilarityCalibration.load(tmp_path)
    assert loaded.same == pytest.approx(calibration.same, abs=1e-6) and loaded.data == {"speakers": 3}
    assert loaded.share_below(2.0) == (1.0, 1.0) and loaded.share_below(-2.0) == (0.0, 0.0)
    assert np.isnan(loaded.share_below(float("nan"))[0])
    assert "closer to the target than 100 % of real same-speaker pairs are" in loaded.describe(1.0)
    assert SimilarityCalibration.load(tmp_path / "absent") is None
    (tmp_path / FILE_NAME).write_text('{"format": "something else"}')
    with pytest.raises(CheckpointError, match="cannot read the similarity calibration"):
        SimilarityCalibration.load(tmp_path)


def test_centred_similarity_calibration_takes_out_the_shared_direction(tmp_path):
    """Every voice shares one direction of the speaker space; centring on it keeps a voice close to
    itself and pulls different voices apart, round-trips with the file, and old raw files still load."""
    import json

    from voiceconv.demo.calibration import (
        FILE_NAME,
        SimilarityCalibration,
        centred_cosine,
        mean_direction,
        pair_cosines,
        span_vectors,
    )
    from voiceconv.errors import CheckpointError

    rng = np.random.default_rng(0)
    shared = 4.0 * rng.normal(size=16)  # the direction all voices share dominates each vector
    voices = {name: shared + rng.normal(size=16) for name in "abcdef"}
    utterances = [SimpleNamespace(speaker=s, n_frames=400) for s in "abcdef" for _ in range(3)]

    class Corpus:
        mel_config = SimpleNamespace(sample_rate=22050, hop_length=256)

        def __init__(self):
            self.utterances, self.drawn = utterances, 0

        def indices_for(self, speakers):
            return [i for i, u in enumerate(utterances) if u.speaker in speakers]

        def mel(self, index, start, length):
            self.drawn += 1
            noise = np.random.default_rng(self.drawn).normal(scale=0.2, size=16)
            return np.tile((voices[utterances[index].speaker] + noise)[:, None], (1, length))  # (n_mels, T)

    corpus = Corpus()
    embed = lambda mel: mel[:, 0]  # noqa: E731
    center = mean_direction(span_vectors(corpus, embed, list("abcdef"), 200, seed=2))
    unit_shared = shared / np.linalg.norm(shared)
    assert 0.8 < np.linalg.norm(center) < 1.0 and np.dot(center, unit_shared) / np.linalg.norm(center) > 0.95
    raw_same, raw_different = pair_cosines(corpus, embed, list("abcdef"), 60, seed=1)
    same, different = pair_cosines(corpus, embed, list("abcdef"), 60, seed=1, center=center)
    assert np.mean(raw_different) > 0.85  # raw: any two voices look alike
    assert np.mean(same) > 0.9 and np.mean(different) < 0.4  # centred: only the same voice does
    a, b = voices["a"], voices["b"]
    assert centred_cosine(a, b) == pytest.approx(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    assert centred_cosine(a, 3.0 * a, center) == pytest.approx(1.0)  # scale does not matter, only direction
    assert np.isnan(centred_cosine(a, np.zeros(16), center)) and np.isnan(centred_cosine(None, a, center))

    calibration = SimilarityCalibration.from_cosines(same, different, method="centred", center=center)
    assert calibration.score(a, b) == pytest.approx(centred_cosine(a, b, center))
    calibration.save(tmp_path)
    assert json.loads((tmp_path / FILE_NAME).read_text())["format_version"] == 2
    loaded = SimilarityCalibration.load(tmp_path)
    assert loaded.center == pytest.approx(center, abs=1e-6) and loaded.score(a, b) == pytest.approx(
        calibration.score(a, b), abs=1e-5)
    # A version-1 file (raw cosines, no centre) still loads, and scores raw.
    old = json.loads((tmp_path / FILE_NAME).read_text())
    old.pop("center")
    old["format_version"] = 1
    (tmp_path / FILE_NAME).write_text(json.dumps(old))
    assert SimilarityCalibration.load(tmp_path).center is None
    assert SimilarityCalibration.load(tmp_path).score(a, b) == pytest.approx(centred_cosine(a, b))
    old["center"], old["format_version"] = (2.0 * unit_shared).tolist(), 2  # not a mean of unit vectors
    (tmp_path / FILE_NAME).write_text(json.dumps(old))
    with pytest.raises(CheckpointError, match="centre"):
        SimilarityCalibration.load(tmp_path)


def test_own_similarity_is_the_calibrations_centred_score():
    """With a centred calibration the demo scores the same centred cosine its quantiles are of, on the
    encoder's (unfitted) vectors; without one, the converter's raw similarity."""
    import torch

    from voiceconv.demo.calibration import SimilarityCalibration, centred_cosine
    from voiceconv.demo.similarity import own_similarity
    from voiceconv.errors import VoiceconvError

    rng = np.random.default_rng(3)
    clip_vector, target_vector = torch.from_numpy(rng.normal(size=8)), torch.from_numpy(rng.normal(size=8))
    center = 0.3 * rng.normal(size=8) / np.sqrt(8)

    class Converter:
        sample_rate = 22050

        def __init__(self):
            self.calls = []

        def embed_speaker(self, audio, adapt_steps=None):
            self.calls.append(("embed", adapt_steps))
            if not np.abs(audio[1]).max():
                raise VoiceconvError("too little sound")
            return SimpleNamespace(embedding=clip_vector)

        def load_speaker(self, speaker):
            return SimpleNamespace(comparison_embedding=target_vector)

        def similarity(self, audio, speaker, source_rate=None):
            self.calls.append(("raw", source_rate))
            return 0.5

    calibration = SimilarityCalibration.from_cosines([0.9, 1.0], [0.1, 0.2], center=center)
    converter, audio = Converter(), np.ones(100, np.float32)
    assert own_similarity(converter, audio, "t", calibration) == pytest.approx(
        centred_cosine(clip_vector.numpy(), target_vector.numpy(), center))
    assert converter.calls == [("embed", 0)]  # unfitted, as VoiceConverter.similarity embeds
    assert own_similarity(converter, audio, "t", SimilarityCalibration.from_cosines([0.9, 1.0], [0.1, 0.2])) == 0.5
    assert own_similarity(converter, audio, "t") == 0.5
    assert np.isnan(own_similarity(converter, np.zeros(100, np.float32), "t", calibration))


# ---------------------------------------------------------------------------------------------------
# issue 14: input-check warnings and voice blending in the page


def test_input_check_warning_reaches_the_page(server, monkeypatch):
    """A source (and reference) the input check flags converts anyway, with the warning at the top of the text."""
    from voiceconv.convert.input_check import InputCheck

    converters = server.backend.converters[server.model].values()
    model = next(iter(converters)).model
    bank = torch.nn.functional.normalize(torch.randn(4, model.speaker_dim), dim=1)
    for converter in converters:  # threshold -inf: every clip is "unlike the training speech"
        monkeypatch.setattr(converter, "input_check", InputCheck(torch.zeros(3), torch.ones(3), -np.inf, bank))
    client = Client(server.url, verbose=False)
    result, info, _ = convert(client, server.clips.source, voice="librispeech_1116")
    assert audio_seconds(result) == pytest.approx(SOURCE_SECONDS, abs=0.02)  # a warning, not a refusal
    assert info.startswith("**Warning:** the source ")
    assert "the result will probably be poor: use a clean recording of one person speaking." in info
    assert "**Warning:** the reference clip of Female voice B (LibriSpeech speaker 1116) " in info

    monkeypatch.setattr(type(next(iter(converters))), "check_input", lambda self, clip, source_rate=None: None)
    _, info, _ = convert(client, server.clips.source, voice="librispeech_1116")
    assert "Warning" not in info


def test_blend_of_two_gallery_voices(server):
    """A 50/50 blend converts, names the blend and measures against each voice; the old 7-argument call
    (no blend inputs, as benchmarks/demo_load.py makes it) still works and blends nothing."""
    from voiceconv.convert.speaker import Speaker

    client = Client(server.url, verbose=False)
    result, info, plot = convert(client, server.clips.source, voice="librispeech_2136", blend="librispeech_1898",
                                 blend_weight=0.5, pitch="off")
    assert audio_seconds(result) == pytest.approx(SOURCE_SECONDS, abs=0.02)
    audio, _ = sf.read(result, dtype="float32")
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert ("Target: **a blend of 50 % Male voice A (LibriSpeech speaker 2136) and 50 % Female voice A "
            "(LibriSpeech speaker 1898)**") in info
    assert "| to Male voice A (LibriSpeech speaker 2136) (50 %) | to Female voice A (LibriSpeech speaker 1898) " \
           "(50 %) |" in info
    assert plot["type"] == "matplotlib"

    backend = server.backend
    male, female = backend.gallery_voice("librispeech_2136"), backend.gallery_voice("librispeech_1898")
    voices, weights, speaker, _ = backend.blended(server.model, male, (female, 0.25))
    assert weights == [0.75, 0.25] and len(voices) == 2
    expected = Speaker.blend([(backend.gallery_speaker(server.model, male), 0.75),
                              (backend.gallery_speaker(server.model, female), 0.25)])
    assert torch.allclose(speaker.embedding, expected.embedding)
    assert backend.blended(server.model, male, (female, 0.0))[3] == male.label  # weight 0: the first voice
    assert backend.blended(server.model, male, (female, 1.0))[3] == female.label  # weight 1: the second alone
    assert backend.blended(server.model, male, (male, 0.5))[3] == male.label  # a voice with itself

    old, old_info, _ = client.predict(handle_file(str(server.clips.source)), "gallery", "librispeech_196", "off", 0,
                                      "neural", "bundle", api_name="/convert")
    assert audio_seconds(old) == pytest.approx(SOURCE_SECONDS, abs=0.02) and "blend" not in old_info
    with pytest.raises(AppError, match="1.5 is greater than maximum value 1"):  # the slider's own check
        convert(client, server.clips.source, blend="librispeech_1898", blend_weight=1.5)
    with pytest.raises(Exception, match="Blend weight: -0.5 is outside 0-1"):  # and the backend's
        backend.blended(server.model, male, (female, -0.5))
