"""The Gradio web demo: a thin layer over :class:`voiceconv.convert.converter.VoiceConverter`.

Start it with ``voiceconv demo`` (or ``python demo/app.py``); both call :func:`launch`. The page
lets a visitor upload or record a source, pick a bundled gallery voice (or a blend of two) or
their own reference clips as the target, and get the converted audio back with mel spectrograms,
speaker similarity, input-check warnings and timing. All model work is
``VoiceConverter.embed_speaker`` / ``.convert`` / ``.check_input``. The package ``voiceconv.demo`` only
validates input (``inputs``), caches speaker embeddings and runs one request (``backend``), measures
similarity for display (``similarity``), draws the figure (``figures``); this module lays out and wires
the page.

Design choices, each for a reason:

- Gallery voices are embedded once per model and cached for every visitor (kNN-VC's "embed the
  target once, convert many sources" split); a visitor's own clips are kept in their session
  (``gr.State``) for the rest of the visit and never shared.
- The queue runs one conversion at a time by default: the demo targets a 2-core CPU, where two
  parallel conversions are each slower than two in a row.
- Every bad input becomes a ``gr.Error`` with a sentence that says what to do; no traceback
  reaches the page.
- The similarity shown is one a visitor can read: the independent Resemblyzer judge when it is
  installed (with the measured threshold and averages to compare against), else the model's own
  encoder ranked among real pairs (``similarity_calibration.json`` beside the model), else the raw
  own cosine, labelled as uncalibrated. The model's own cosine alone rates nearly every conversion
  0.98-0.99. Similarity is display only: it never changes the conversion, and never fails it.
- Offline by construction: analytics off, no share link unless asked, bundled fonts only, and
  only the gallery folder is added to the paths Gradio may serve.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from voiceconv.demo.backend import ConversionResult, DemoBackend
from voiceconv.demo.config import BLEND_NONE, GRIFFIN_LIM, NEURAL, DemoConfig
from voiceconv.demo.inputs import GalleryVoice, describe_audio, user_error
from voiceconv.demo.similarity import similarity_markdown
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)


def result_markdown(result: ConversionResult) -> str:
    """The text beside the result: input warnings first, the target, similarity, timing and the vocoder."""
    rtf = result.seconds_convert / max(result.source_seconds, 1e-9)
    lines = []
    for warning in result.warnings:  # first, so a poor result is explained before it is measured
        lines += [f"**Warning:** {warning}.", ""]
    lines += [f"Target: **{result.target}**.", "", *similarity_markdown(result.similarity), "",
              f"Processing time: **{result.seconds_convert:.2f} s** to convert {result.source_seconds:.1f} s of "
              f"audio (real-time factor {rtf:.2f}); {result.seconds_total:.2f} s for the whole request. "
              f"Model: {result.model}."]
    if result.vocoder_fallback:
        lines += ["", "**Note: made with the Griffin-Lim fallback vocoder** because no neural vocoder is installed: "
                  "expect a robotic, phasey sound. Install or train a neural vocoder for natural audio."]
    elif not result.neural_vocoder:
        lines += ["", "Made with the **Griffin-Lim** vocoder (chosen above), not the neural one."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# the Blocks app


def _guarded(handler):
    """Wrap an event handler: visitor errors pass through as ``gr.Error``; anything else is a bug,
    logged with its traceback on the server and shown on the page as one sentence."""
    import functools

    import gradio as gr

    @functools.wraps(handler)  # keeps the signature, so Gradio still sees the gr.Progress parameter
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except VoiceconvError as error:
            raise user_error(str(error)) from None
        except Exception:
            log.exception("demo: %s failed", handler.__name__)
            raise gr.Error("Something went wrong on the server (the details are in its log). Try another clip; "
                           "if it keeps happening, please report it.", print_exception=False) from None

    return wrapper


def _release_memory() -> None:
    """Give freed heap memory back to the OS after a conversion (glibc only; a no-op elsewhere).

    Measured with benchmarks/demo_load.py: without this, glibc keeps the freed buffers of each
    conversion in per-thread arenas and the server's RSS creeps up by a few MB per request; with it,
    RSS stays flat. The Python objects themselves are freed either way (tracemalloc shows no growth).
    """
    import ctypes
    import ctypes.util

    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None  # glibc's malloc_trim, looked up on first use (False where there is none)


def _to_int16(audio: np.ndarray) -> np.ndarray:
    """Float ``(T,)`` -> int16 PCM, so Gradio writes the WAV as is instead of warning and converting."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def build_app(backend: DemoBackend):
    """The Blocks page over ``backend``. Returns the un-launched ``gr.Blocks``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    config = backend.config
    gallery_choices = [(voice.label, voice.id) for voice in backend.gallery]
    first_voice = backend.gallery[0]
    vocoder_labels = {NEURAL: "Neural vocoder (default)", GRIFFIN_LIM: "Griffin-Lim (no weights; robotic)"}

    def attribution_text(voice: GalleryVoice) -> str:
        return f"<small>Source: {voice.attribution}. License: {voice.license}.</small>"

    @_guarded
    def on_gallery_change(voice_id):
        voice = backend.gallery_voice(voice_id)
        return str(voice.path), attribution_text(voice)

    @_guarded
    def on_source_change(path):
        return describe_audio(path)

    @_guarded
    def on_set_reference(files, recording, state):
        paths = [str(getattr(f, "name", f)) for f in (files or [])]
        if recording:
            paths.append(str(recording))
        if not paths:
            raise user_error("Add one or more reference clips (upload or record) before using them as the target.")
        state = backend.custom_voice(paths)
        names = ", ".join(Path(p).name for p in paths)
        status = (f"Your target voice is set from {len(paths)} clip(s), {state['seconds']:.1f} s ({names}). "
                  "It is kept for the rest of this visit.")
        return state, status, "custom"

    @_guarded
    def on_clear_reference():
        return None, "No custom voice set.", "gallery"

    # The blend inputs come last, after the session state, so the API keeps the positions it had
    # before blending existed (source, target_mode, voice, pitch, semitones, vocoder, model) and a
    # caller that leaves them out gets their defaults: no blend.
    @_guarded
    def on_convert(source, target_mode, voice_id, pitch_mode, semitones, vocoder, model, custom,
                   blend_id=BLEND_NONE, blend_weight=0.5, progress=gr.Progress()):
        blend = None
        if target_mode == "custom":
            if not custom:
                raise user_error("No custom voice yet: add reference clips and press 'Use as my target voice', "
                                  "or pick a gallery voice.")
            target = custom
        else:
            target = backend.gallery_voice(voice_id)
            if blend_id not in (None, "", BLEND_NONE):  # blending is offered in the Gallery tab only
                weight = 0.5 if blend_weight is None else float(blend_weight)
                blend = (backend.gallery_voice(blend_id), weight)
        pitch = {"auto": "auto", "off": None}.get(pitch_mode, None if pitch_mode is None else float(semitones or 0))
        try:
            result = backend.convert(source, target, pitch=pitch, model=model, vocoder=vocoder,
                                     progress=lambda fraction, text: progress(fraction, desc=text), blend=blend)
            return (result.sample_rate, _to_int16(result.audio)), result_markdown(result), result.figure, custom
        finally:
            _release_memory()

    with gr.Blocks(title="voiceconv: one-shot voice conversion", analytics_enabled=False,
                   delete_cache=config.delete_cache) as demo:
        gr.Markdown(
            "# voiceconv: one-shot voice conversion\n"
            "Make a recording sound like another speaker from a few seconds of their voice. "
            "Upload or record a **source**, choose a **target voice**, and press **Convert**. "
            f"Clips: {config.min_seconds:g}-{config.max_seconds:g} s, up to "
            f"{config.max_file_size / 1e6:.3g} MB; WAV, FLAC, OGG or MP3."
        )
        custom_state = gr.State(None, time_to_live=config.custom_voice_ttl)
        with gr.Row():
            with gr.Column():
                gr.Markdown("### 1. Source")
                source = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Source recording",
                                  buttons=["download"], elem_id="source_audio")
                source_info = gr.Markdown("", elem_id="source_info")
            with gr.Column():
                gr.Markdown("### 2. Target voice")
                target_mode = gr.Radio([("A gallery voice", "gallery"), ("My reference clips", "custom")],
                                       value="gallery", label="Convert to", elem_id="target_mode")
                with gr.Tabs(selected="gallery") as target_tabs:
                    with gr.Tab("Gallery", id="gallery") as gallery_tab:
                        voice_id = gr.Radio(gallery_choices, value=first_voice.id, label="Gallery voices",
                                            elem_id="gallery_voice")
                        with gr.Row():
                            blend_id = gr.Dropdown([("None", BLEND_NONE), *gallery_choices], value=BLEND_NONE,
                                                   label="Blend with", info="a second gallery voice to mix in",
                                                   elem_id="blend_voice")
                            blend_weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Blend weight",
                                                     info="share of the second voice (0: the first only)",
                                                     elem_id="blend_weight")
                        preview = gr.Audio(value=str(first_voice.path), label="Listen", interactive=False,
                                           buttons=["download"], elem_id="gallery_preview")
                        attribution = gr.Markdown(attribution_text(first_voice), elem_id="gallery_attribution")
                    with gr.Tab("My reference clips", id="custom") as custom_tab:
                        reference_files = gr.File(file_count="multiple", file_types=["audio"],
                                                  label="Upload one or more clips of the target speaker",
                                                  elem_id="reference_files")
                        reference_mic = gr.Audio(sources=["microphone"], type="filepath", label="…or record one",
                                                 buttons=["download"], elem_id="reference_mic")
                        with gr.Row():
                            use_reference = gr.Button("Use as my target voice", elem_id="use_reference")
                            clear_reference = gr.Button("Forget my voice", elem_id="clear_reference")
                        reference_status = gr.Markdown("No custom voice set.", elem_id="reference_status")
        with gr.Row():
            pitch_mode = gr.Radio([("Auto (move to the target's range)", "auto"), ("Shift by semitones", "semitones"),
                                   ("Off (keep the source pitch)", "off")], value="off", label="Pitch",
                                  elem_id="pitch_mode")
            semitones = gr.Slider(-12, 12, value=0, step=1, label="Semitones (when shifting)", elem_id="semitones")
            vocoder = gr.Radio([(vocoder_labels[v], v) for v in backend.vocoder_names],
                               value=backend.vocoder_names[0], label="Vocoder", elem_id="vocoder",
                               visible=len(backend.vocoder_names) > 1)
            model = gr.Dropdown(backend.model_names, value=backend.model_names[0], label="Model",
                                elem_id="model", visible=len(backend.model_names) > 1)
        convert = gr.Button("Convert", variant="primary", elem_id="convert")
        gr.Markdown("### 3. Result")
        with gr.Row():
            result_audio = gr.Audio(type="numpy", format="wav", label="Converted audio", interactive=False,
                                    buttons=["download"], elem_id="result_audio")
            result_info = gr.Markdown("", elem_id="result_info")
        plot = gr.Plot(label="Log-mel spectrograms", show_label=False, elem_id="mel_plot")
        if backend.fallback_models:
            gr.Markdown("**Note:** no neural vocoder is installed, so results are made with the "
                        "**Griffin-Lim fallback** (robotic quality).", elem_id="fallback_note")
        with gr.Accordion("About the gallery voices", open=False):
            gr.Markdown((backend.gallery_dir / "ATTRIBUTION.md").read_text()
                        if (backend.gallery_dir / "ATTRIBUTION.md").is_file() else "")

        # The tabs and the "Convert to" choice follow each other, so what is on screen is what is used.
        gallery_tab.select(lambda: "gallery", None, target_mode, api_visibility="private", queue=False)
        custom_tab.select(lambda: "custom", None, target_mode, api_visibility="private", queue=False)
        target_mode.change(lambda mode: gr.Tabs(selected=mode), target_mode, target_tabs, api_visibility="private",
                           queue=False)
        voice_id.change(on_gallery_change, voice_id, [preview, attribution], api_visibility="private", queue=False,
                        show_progress="hidden")
        source.change(on_source_change, source, source_info, api_visibility="private", queue=False,
                      show_progress="hidden")
        use_reference.click(on_set_reference, [reference_files, reference_mic, custom_state],
                            [custom_state, reference_status, target_mode], api_name="set_reference",
                            concurrency_id="model")
        clear_reference.click(on_clear_reference, None, [custom_state, reference_status, target_mode],
                              api_name="clear_reference", queue=False)
        convert.click(on_convert, [source, target_mode, voice_id, pitch_mode, semitones, vocoder, model, custom_state,
                                   blend_id, blend_weight],
                      [result_audio, result_info, plot, custom_state], api_name="convert", concurrency_id="model")
    demo.queue(default_concurrency_limit=config.concurrency_limit, max_size=config.queue_size)
    return demo


def launch(
    config: DemoConfig,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
):
    """Load the models, build the page and serve it. With ``block=False`` returns ``(demo, backend, url)``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    backend = DemoBackend(config)
    demo = build_app(backend)
    # Only the gallery folder joins Gradio's own temp area among the paths the server may send; SSR
    # would need Node, and the MCP endpoint is not wanted on a demo.
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
        max_file_size=config.max_file_size, allowed_paths=[str(backend.gallery_dir)], show_error=False,
        ssr_mode=False, mcp_server=False, quiet=quiet, state_session_capacity=config.session_capacity,
        # Run history could offer to save runs to a Hugging Face bucket; the page must not reach out.
        run_history=False, footer_links=["api", "settings"],
    )
    return demo, backend, url
