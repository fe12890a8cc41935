"""End-to-end test of the web demo in a real browser: Debian's headless Chromium driven by Playwright.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python package
(``pip install playwright``; *no* ``playwright install``: the system Chromium is used). Skips with
the reason when either is missing. Set ``VOICECONV_DEMO_SCREENSHOT=docs/demo_screenshot.png`` to
also copy the final screenshot there (that is how the README's picture is made); for that picture,
``VOICECONV_DEMO_MODEL=default`` (or a model directory) serves a real model instead of the tiny
random one, ``VOICECONV_DEMO_SOURCE=clip.wav`` converts a real recording, and the page keeps the
default upload limit (20 MB) instead of the small one the size-limit test needs (that test skips).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import soundfile as sf

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing; pip install playwright (no 'playwright install')")
    return sync_playwright


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_playwright = _playwright()
    scratch = tmp_path_factory.mktemp("browser_home")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            env=dict(os.environ, HOME=str(scratch), TMPDIR=str(scratch)),
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def web(browser, tmp_path_factory):
    """The demo served in-process (tiny random model + tiny neural vocoder) for the browser."""
    from test_demo import SIZE_LIMIT, free_port, gradio_environment, make_bundle, write_clips

    from voiceconv.demo.app import launch
    from voiceconv.demo.config import DemoConfig

    with gradio_environment(tmp_path_factory.mktemp("demo_web")) as root:
        clips = write_clips(root / "clips")
        chosen = os.environ.get("VOICECONV_DEMO_MODEL")
        models = [] if chosen == "default" else [chosen] if chosen else [str(make_bundle(root / "bundle"))]
        # The README's picture shows the defaults a visitor gets; the tests want a small upload limit.
        size_limit = DemoConfig().max_file_size if os.environ.get("VOICECONV_DEMO_SCREENSHOT") else SIZE_LIMIT
        config = DemoConfig(models=models, max_file_size=size_limit, delete_cache=None)
        demo, backend, url = launch(config, port=free_port(), block=False, quiet=True)
        yield SimpleNamespace(url=url, backend=backend, clips=clips, size_limit=size_limit)
        demo.close()


@pytest.fixture
def page(web, browser):
    """A fresh page (its own session) that records every request to a host other than this machine."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.external_requests = []
    page.local_requests = []

    def record(request):
        page.local_requests.append(request.url)
        if urlsplit(request.url).scheme in ("http", "https", "ws", "wss") and \
                urlsplit(request.url).hostname not in LOCAL_HOSTS:
            page.external_requests.append(request.url)

    page.on("request", record)
    page.goto(web.url)
    page.wait_for_selector("#convert")
    yield page
    context.close()


def toast_text(page, contains: str, timeout: float = 30_000) -> str:
    toast = page.locator("[data-testid=toast-body]").filter(has_text=contains).first
    toast.wait_for(timeout=timeout)
    return toast.inner_text()


def upload_source(page, path: Path) -> None:
    if page.locator("#source_audio input[type=file]").count() == 0:  # a clip is loaded: clear it first
        page.locator("#source_audio button[aria-label=Clear]").click()
    page.locator("#source_audio input[type=file]").set_input_files(str(path))


def wait_for_result(page, tmp_path: Path, name: str) -> Path:
    """Wait for the result's download link, download it, return the file."""
    link = page.locator("#result_audio a[download]")
    link.wait_for(timeout=120_000)
    with page.expect_download() as download:
        link.click()
    target = tmp_path / name
    download.value.save_as(target)
    return target


def test_convert_in_the_browser(web, page, tmp_path):
    """Upload a source, pick a gallery voice, convert, download the result; bad input first gets a message."""
    # A text file named .wav: a readable message in the page, then the app goes on serving.
    upload_source(page, web.clips.not_audio)
    page.locator("#source_info").get_by_text("not a readable audio file").wait_for(timeout=30_000)
    page.locator("#convert").click()
    assert "Source: notes.wav: not a readable audio file" in toast_text(page, "not a readable audio file")

    source = Path(os.environ.get("VOICECONV_DEMO_SOURCE", web.clips.source))
    seconds = sf.info(str(source)).duration
    upload_source(page, source)
    page.locator("#source_info").get_by_text(f"Duration {seconds:.2f} s").wait_for(timeout=30_000)
    page.locator("#gallery_voice").get_by_label("Male voice A (LibriSpeech speaker 2136)").check()
    page.locator("#gallery_attribution").get_by_text("speaker 2136").wait_for(timeout=30_000)
    from playwright.sync_api import expect

    expect(page.locator("#blend_voice input")).to_have_value("None")  # blending is offered, off by default
    expect(page.locator("#pitch_mode input[value=off]")).to_be_checked()  # the default pitch is "Off"
    page.locator("#convert").click()
    result = wait_for_result(page, tmp_path, "converted.wav")

    info = sf.info(str(result))
    assert info.frames / info.samplerate == pytest.approx(seconds, abs=0.02)
    audio, _ = sf.read(str(result), dtype="float32")
    assert audio.size and abs(audio).max() > 0
    text = page.locator("#result_info").inner_text()
    assert "speaker similarity to the target" in text and "Processing time" in text
    from voiceconv.demo.similarity import judge_available

    if judge_available():  # the independent judge, with how to read it
        assert "independent speaker-verification model (Resemblyzer)" in text
    else:
        assert "own speaker encoder" in text
    assert page.locator("#mel_plot img").count() == 1  # the matplotlib figure is on the page

    for close in page.locator("[data-testid=toast-close]").all():  # the earlier error toast would hide the title
        close.click()
    page.locator("[data-testid=toast-body]").first.wait_for(state="detached", timeout=10_000)
    screenshot = tmp_path / "demo.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("VOICECONV_DEMO_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["VOICECONV_DEMO_SCREENSHOT"])
    assert len(page.local_requests) > 10  # the recorder saw the page's own traffic...
    assert page.external_requests == [], "the page must work offline (no CDN, fonts or analytics)"  # ...and no other


def test_upload_over_the_size_limit_is_refused_in_the_page(web, page):
    from test_demo import SIZE_LIMIT

    if web.size_limit != SIZE_LIMIT:
        pytest.skip("the page serves the default upload limit for the README screenshot")
    upload_source(page, web.clips.oversize)
    assert "exceed the maximum allowed size" in toast_text(page, "maximum allowed size")
    assert web.clips.oversize.name in toast_text(page, "maximum allowed size")
    assert page.external_requests == []


def test_own_reference_clips_become_the_target_for_the_visit(web, page, tmp_path):
    page.get_by_role("tab", name="My reference clips").click()
    from playwright.sync_api import expect

    expect(page.locator("#target_mode input[value=custom]")).to_be_checked()  # the choice follows the tab
    page.locator("#convert").click()  # nothing set yet: a message, not a crash
    toast_text(page, "No custom voice yet")

    expect(page.locator("#reference_files")).to_be_visible()
    page.locator("#reference_files input[type=file]").set_input_files([str(web.clips.reference)])
    page.locator("#reference_files").get_by_text(web.clips.reference.name).wait_for(timeout=30_000)
    page.locator("#use_reference").click()
    page.locator("#reference_status").get_by_text("kept for the rest of this visit").wait_for(timeout=60_000)

    upload_source(page, web.clips.source)
    page.locator("#source_info").get_by_text("Duration").wait_for(timeout=30_000)
    page.locator("#convert").click()
    result = wait_for_result(page, tmp_path, "custom.wav")
    info = sf.info(str(result))
    assert info.frames / info.samplerate == pytest.approx(3.0, abs=0.02)
    assert "speaker similarity to the target" in page.locator("#result_info").inner_text()
    assert page.external_requests == []
