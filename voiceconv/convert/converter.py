"""``VoiceConverter``: the public conversion API that the CLI, the batch runner and the demo sit on.

::

    from voiceconv import VoiceConverter
    vc = VoiceConverter.from_pretrained()                    # shipped default model + vocoder
    speaker = vc.embed_speaker(["ref1.wav", "ref2.wav", "ref3.wav"])
    wav = vc.convert("source.wav", speaker)                  # (T,) float32 tensor at vc.sample_rate
    vc.convert_to_file("long.flac", speaker, "out.wav")      # any length, bounded memory
    for block in vc.stream(microphone_blocks, speaker):      # real-time, constant latency
        play(block)

Sources are paths (WAV/FLAC/OGG/MP3), arrays or tensors at the model rate (or at ``source_rate``),
or Gradio-style ``(rate, array)`` tuples. Conversion runs window by window
(:mod:`voiceconv.convert.engine`), so memory does not grow with the input beyond the returned buffer.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from voiceconv.atomic import atomic_path
from voiceconv.audio import SILENCE_PEAK, trim_silence
from voiceconv.convert.adapt import DEFAULT_ADAPT_STEPS, adapt_speaker
from voiceconv.convert.engine import ConversionEngine
from voiceconv.convert.input_check import InputCheck, InputReport
from voiceconv.convert.pitch import F0Stats, auto_semitones, parse_pitch
from voiceconv.convert.source import MIN_SOURCE_SECONDS, SourceAudio, check_source
from voiceconv.convert.speaker import SPEAKER_SUFFIX, Speaker
from voiceconv.convert.windows import ChunkPlan
from voiceconv.errors import AudioError, CheckpointError, VoiceconvError
from voiceconv.features import MelSpectrogram

log = logging.getLogger(__name__)

MIN_REFERENCE_SECONDS = 0.5  # of speech after trimming silence: shorter clips give erratic speaker vectors
MAX_CHECK_SECONDS = 23.0  # the input check scores this much of a clip: enough for a verdict, bounded cost
MAX_REFERENCE_SECONDS = 120.0  # a reference is read up to this long; more adds nothing to a mean vector
GRIFFIN_LIM_NAMES = ("griffin-lim", "griffin_lim", "griffinlim", "gl")
OUTPUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
                  ".mp3": ("MP3", "MPEG_LAYER_III")}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class VoiceConverter:
    """A VC model and a vocoder that agree on the mel front end.

    Use :meth:`from_pretrained`; the constructor takes already-built modules (tests, custom code).
    ``plan`` sets the window sizes of long-input conversion (:class:`voiceconv.convert.windows.ChunkPlan`).
    """

    def __init__(self, model, vocoder, device: str | torch.device | None = None, plan: ChunkPlan | None = None):
        model.mel_config.check_compatible(vocoder.mel_config, "VC model", "vocoder")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.vocoder = vocoder.to(self.device).eval()
        self.plan = plan or ChunkPlan()
        self.frontend = MelSpectrogram(model.mel_config)
        self._model_sha256: str | None = None
        # Calibration of the input check (voiceconv.convert.input_check); None: the model ships without one.
        self.input_check: InputCheck | None = None
        # Steps that fit each new voice's vector to its references (voiceconv.convert.adapt); 0: encoder only.
        self.adapt_steps = DEFAULT_ADAPT_STEPS

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, vocoder=None,
                        device: str | torch.device | None = None, adapt_steps: int | None = None) -> VoiceConverter:
        """Load a VC model directory (None: the shipped default) and a vocoder.

        ``vocoder``: None (the vocoder next to the model if ``path`` holds ``vc/`` and ``vocoder/``,
        else the shipped default; Griffin-Lim with a warning if there is none), a directory, a
        :class:`~voiceconv.vocoder.model.Vocoder`, or ``"griffin-lim"``. The mel configs of the two
        are compared and a mismatch raises ``MelMismatchError`` naming every differing field.
        ``adapt_steps``: steps that fit each new voice to its references (None: 10; 0: none).
        """
        from voiceconv.models.vc_model import VCModel
        from voiceconv.pretrained import default_vc_dir, default_vocoder_dir
        from voiceconv.vocoder.model import Vocoder

        device = torch.device(device) if device is not None else default_device()
        if path is None:
            model_dir = default_vc_dir()
            if not (model_dir / "model.safetensors").is_file():
                raise CheckpointError(
                    f"no shipped default voice conversion model is installed ({model_dir} has no model.safetensors); "
                    "pass a model directory (VoiceConverter.from_pretrained('exp/vc') or --model DIR), or train "
                    "one with 'voiceconv train'"
                )
            sibling_vocoder = default_vocoder_dir()
        else:
            model_dir = Path(path)
            sibling_vocoder = default_vocoder_dir()
            # A bundle laid out like voiceconv/pretrained: <dir>/vc and <dir>/vocoder.
            if not (model_dir / "config.json").is_file() and (model_dir / "vc" / "config.json").is_file():
                model_dir, sibling_vocoder = model_dir / "vc", model_dir / "vocoder"
        model = VCModel.from_pretrained(model_dir, device=device)

        if vocoder is None:
            if (Path(sibling_vocoder) / "model.safetensors").is_file():
                voc = Vocoder.from_pretrained(sibling_vocoder, device=device)
                try:
                    model.mel_config.check_compatible(voc.mel_config, "VC model", "vocoder")
                except ValueError as error:
                    log.warning("%s; falling back to Griffin-Lim (robotic quality). Pass a matching vocoder "
                                "(--vocoder DIR) to fix this", error)
                    voc = Vocoder.griffin_lim(model.mel_config, device=device)
            else:
                log.warning("no neural vocoder is installed (%s has no model.safetensors); using Griffin-Lim, "
                            "which sounds robotic. Pass --vocoder DIR (or vocoder=...) for real quality",
                            sibling_vocoder)
                voc = Vocoder.griffin_lim(model.mel_config, device=device)
        elif isinstance(vocoder, str) and vocoder.lower() in GRIFFIN_LIM_NAMES:
            voc = Vocoder.griffin_lim(model.mel_config, device=device)
        elif isinstance(vocoder, (str, os.PathLike)):
            voc = Vocoder.from_pretrained(vocoder, device=device)
        elif isinstance(vocoder, torch.nn.Module):
            voc = vocoder
        else:
            raise VoiceconvError(f"vocoder must be None, a directory, a Vocoder or 'griffin-lim'; got {vocoder!r}")
        converter = cls(model, voc, device=device)
        converter.input_check = InputCheck.load(model_dir)
        if adapt_steps is not None:
            if int(adapt_steps) < 0:
                raise VoiceconvError(f"adapt_steps must be 0 (no fitting) or more, got {adapt_steps}")
            converter.adapt_steps = int(adapt_steps)
        return converter

    # ---- properties -----------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self.model.mel_config.sample_rate)

    @property
    def mel_config(self):
        return self.model.mel_config

    @property
    def model_sha256(self) -> str:
        """sha256 over the model's weights and buffers (names, dtypes, shapes, bytes).

        Computed from the tensors rather than the file, so a model loaded from disk and the same
        model built in memory have the same identity. Speakers carry it to refuse foreign models.
        """
        if self._model_sha256 is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                tensor = tensor.detach().cpu().contiguous()
                digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._model_sha256 = digest.hexdigest()
        return self._model_sha256

    # ---- speakers -------------------------------------------------------------------------------

    def embed_speaker(self, refs, name: str = "", trim: bool = True, adapt_steps: int | None = None) -> Speaker:
        """One or several reference clips of one voice -> :class:`~voiceconv.convert.speaker.Speaker`.

        ``refs``: a path, an array/tensor at the model rate, a ``(rate, array)`` tuple, or a list of
        those. Each clip's leading and trailing silence is trimmed (``trim``), each is embedded on its
        own and the vectors are averaged (not L2-normalised: see :mod:`voiceconv.convert.speaker`).
        The mean is then fitted to the clips for ``adapt_steps`` steps (None: :attr:`adapt_steps`,
        10 by default; 0: the encoder's mean as is; see :mod:`voiceconv.convert.adapt`). The
        log-F0 statistics over all clips are stored for ``pitch="auto"``.
        """
        clips = _as_clip_list(refs)
        if not clips:
            raise VoiceconvError("give at least one reference clip of the target voice")
        steps = self.adapt_steps if adapt_steps is None else int(adapt_steps)
        if steps < 0:
            raise VoiceconvError(f"adapt_steps must be 0 (no fitting) or more, got {steps}")
        vectors, mels, seconds, stats = [], [], 0.0, F0Stats()
        for clip in clips:
            audio, label = self._read_reference(clip, trim)
            mel = self.frontend(torch.from_numpy(audio))  # (n_mels, T)
            with torch.inference_mode():
                vector = self.model.embed(mel.unsqueeze(0).to(self.device))[0].float().cpu()  # (D,)
            vectors.append(vector)
            mels.append(mel)
            seconds += audio.size / self.sample_rate
            stats.update(audio, self.sample_rate)
            log.debug("embedded %s (%.2f s)", label, audio.size / self.sample_rate)
        encoder_embedding = torch.stack(vectors).mean(dim=0)  # (D,): plain mean over clips
        embedding = encoder_embedding
        if steps > 0:
            fit = adapt_speaker(self.model, mels, encoder_embedding, steps=steps)
            log.debug("fitted the voice in %d steps: reference L1 %.4f -> %.4f", steps, fit.loss_before,
                      fit.loss_after)
            embedding = fit.vector
        if not name and isinstance(clips[0], (str, os.PathLike)):
            name = Path(clips[0]).stem
        return Speaker(embedding=embedding, log_f0_mean=stats.mean, log_f0_std=stats.std, n_clips=len(clips),
                       seconds=seconds, voiced_seconds=stats.voiced_seconds, model_sha256=self.model_sha256,
                       name=name, encoder_embedding=encoder_embedding if steps > 0 else None,
                       adapt_steps=steps)

    def _read_reference(self, clip, trim: bool) -> tuple[np.ndarray, str]:
        source = SourceAudio(clip, self.sample_rate, min_seconds=0.0)
        audio, truncated = source.head(int(MAX_REFERENCE_SECONDS * self.sample_rate))
        if truncated:
            log.info("%s: using the first %.0f s as reference", source.name, MAX_REFERENCE_SECONDS)
        if not np.isfinite(np.sum(audio, dtype=np.float64)):
            raise AudioError(f"{source.name}: samples are NaN or Inf; the file is corrupt: re-export it")
        if audio.size == 0 or float(np.abs(audio).max()) < SILENCE_PEAK:
            raise AudioError(f"{source.name}: audio is silent (peak below -80 dBFS); choose a clip with speech")
        if trim:
            audio = trim_silence(audio, self.sample_rate)
        seconds = audio.size / self.sample_rate
        if seconds < MIN_REFERENCE_SECONDS:
            raise AudioError(
                f"{source.name}: only {seconds:.2f} s of audio{' after trimming silence' if trim else ''}; a "
                f"reference needs at least {MIN_REFERENCE_SECONDS} s of speech (3-10 s per clip works best)"
            )
        return np.ascontiguousarray(audio, dtype=np.float32), source.name

    def blend_speakers(self, weights, name: str = "") -> Speaker:
        """A new voice between others: ``{speaker: weight, ...}`` or ``[(speaker, weight), ...]``.

        Each speaker is a :class:`Speaker`, a ``.spk`` path or reference clip paths (embedded here);
        weights are >= 0 and sum to 1. See :meth:`Speaker.blend`.
        """
        items = list(weights.items()) if isinstance(weights, dict) else list(weights)
        resolved = []
        for voice, weight in items:
            is_spk = isinstance(voice, (str, os.PathLike)) and Path(voice).suffix.lower() == SPEAKER_SUFFIX
            if isinstance(voice, Speaker) or is_spk:
                resolved.append((self.load_speaker(voice), weight))
            else:
                resolved.append((self.embed_speaker(voice), weight))
        return Speaker.blend(resolved, name=name)

    def load_speaker(self, speaker) -> Speaker:
        """A :class:`Speaker`, a ``.spk`` path or a bare ``(D,)`` vector, checked against this model."""
        where = "speaker"
        if isinstance(speaker, (str, os.PathLike)):
            where = str(speaker)
            if Path(speaker).suffix.lower() != SPEAKER_SUFFIX:
                raise VoiceconvError(f"{speaker}: expected a {SPEAKER_SUFFIX} speaker file; for reference audio use "
                                     "embed_speaker() (CLI: --target REF...)")
            speaker = Speaker.load(speaker)
        elif isinstance(speaker, (torch.Tensor, np.ndarray)):
            speaker = Speaker.from_embedding(torch.as_tensor(speaker).reshape(-1))
        elif not isinstance(speaker, Speaker):
            raise VoiceconvError(f"speaker must be a Speaker, a .spk path or a (D,) vector; got {type(speaker)}")
        speaker.check_model(self.model_sha256, self.model.speaker_dim, where)
        return speaker

    def similarity(self, audio, speaker, source_rate: int | None = None) -> float:
        """Cosine similarity of ``audio``'s speaker vector to ``speaker``, by this model's own encoder.

        ``audio``: anything :meth:`embed_speaker` takes (e.g. a converted waveform at
        :attr:`sample_rate`). A quick, model-internal measure of how much a conversion sounds like
        the target; an independent speaker-verification judge is in ``voiceconv evaluate``.
        """
        if source_rate is not None:
            audio = (source_rate, audio)
        # Both sides in the encoder's space: the audio unfitted, the target's encoder mean.
        vector = self.embed_speaker(audio, adapt_steps=0).embedding
        target = self.load_speaker(speaker).comparison_embedding
        return float(torch.nn.functional.cosine_similarity(vector, target, dim=0))

    # ---- pitch ----------------------------------------------------------------------------------

    def auto_pitch(self, source, speaker, source_rate: int | None = None) -> float:
        """Semitones that ``pitch="auto"`` applies to ``source`` for ``speaker`` (0 if unknown)."""
        speaker = self.load_speaker(speaker)
        src = SourceAudio(source, self.sample_rate, source_rate, min_seconds=MIN_SOURCE_SECONDS)
        return self._semitones(src, speaker, "auto")

    def _semitones(self, src: SourceAudio, speaker: Speaker, pitch) -> float:
        """Validate the whole source (decodable, finite, not silent) and resolve ``pitch`` to semitones."""
        auto = pitch == "auto" and speaker.has_pitch
        stats = src.scan(f0=auto)
        if pitch == "auto":
            if not speaker.has_pitch:
                log.info("pitch auto: the speaker has no pitch statistics; no shift")
                return 0.0
            semitones = auto_semitones(stats.mean, speaker.log_f0_mean)
            if math.isfinite(stats.mean):
                log.info("pitch auto: source %.0f Hz -> target %.0f Hz: shifting %+.1f semitones",
                         math.exp(stats.mean), speaker.f0_hz, semitones)
            return semitones
        return float(pitch or 0.0)

    # ---- offline conversion ---------------------------------------------------------------------

    def check_input(self, clip, source_rate: int | None = None) -> InputReport | None:
        """Out-of-domain score of a source or reference clip (:mod:`voiceconv.convert.input_check`).

        ``clip``: a path, an array at the model rate, or ``(rate, array)``. Returns an
        :class:`~voiceconv.convert.input_check.InputReport` whose ``warning`` is a sentence for the user
        when the clip is unlike the training speech, or None when the model has no calibration.
        Only the first ~23 s are scored; leading and trailing silence is trimmed first.
        """
        if self.input_check is None:
            return None
        try:
            audio, _ = SourceAudio(clip, self.sample_rate, source_rate, min_seconds=0.0).head(
                int(MAX_CHECK_SECONDS * self.sample_rate))
        except AudioError:
            return None  # unreadable or silent: advisory only; conversion reports the error itself
        audio = trim_silence(audio, self.sample_rate)
        if audio.size < self.mel_config.hop_length * 8:
            return None  # too short to judge; conversion itself reports clips that are too short
        mel = self.frontend(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))  # (n_mels, T)
        return self.input_check.check(self.model, mel)

    def check_source(self, source, source_rate: int | None = None) -> None:
        """Validate a source as :meth:`convert` would (readable, long enough, finite, not silent).

        Raises the same one-line :class:`~voiceconv.errors.AudioError`; run it before embedding a
        target so that a bad source fails before that work is done.
        """
        check_source(source, self.sample_rate, source_rate)

    def _prepare(self, source, speaker, pitch, source_rate) -> tuple[SourceAudio, Speaker, float]:
        speaker = self.load_speaker(speaker)
        pitch = parse_pitch(pitch)
        src = SourceAudio(source, self.sample_rate, source_rate, min_seconds=MIN_SOURCE_SECONDS)
        return src, speaker, self._semitones(src, speaker, pitch)

    def iter_convert(self, source, speaker, pitch=None, source_rate: int | None = None,
                     plan: ChunkPlan | None = None) -> Iterator[np.ndarray]:
        """Convert window by window, yielding float32 blocks at :attr:`sample_rate` as they are final.

        The input is validated (and, for ``pitch="auto"``, pitch-tracked) before the first block.
        """
        src, speaker, semitones = self._prepare(source, speaker, pitch, source_rate)
        return self._blocks(src, speaker, semitones, plan)

    def _blocks(self, src: SourceAudio, speaker: Speaker, semitones: float, plan) -> Iterator[np.ndarray]:
        engine = ConversionEngine(self.model, self.vocoder, speaker.embedding, semitones, plan or self.plan,
                                  self.device)
        for block in src.blocks():
            out = engine.push(block)
            if out.size:
                yield out
        out = engine.finish()
        if out.size:
            yield out

    def convert(self, source, speaker, pitch=None, source_rate: int | None = None) -> torch.Tensor:
        """Re-voice ``source`` as ``speaker``; returns ``(T,)`` float32 CPU tensor at :attr:`sample_rate`.

        ``pitch``: ``"auto"`` (move the source's mean log-F0 to the speaker's), a number of
        semitones, or None/``"off"``. The output has as many samples as the source at the model rate.
        """
        src, speaker, semitones = self._prepare(source, speaker, pitch, source_rate)
        # Preallocated to the expected length: the only buffer that grows with the input.
        out = np.empty(src.expected_samples + self.mel_config.hop_length, np.float32)
        filled = 0
        for block in self._blocks(src, speaker, semitones, None):
            if filled + block.size > out.size:
                out = np.concatenate([out, np.empty(block.size, np.float32)])
            out[filled : filled + block.size] = block
            filled += block.size
        return torch.from_numpy(out[:filled])

    def convert_to_file(self, source, speaker, path: str | os.PathLike, pitch=None, overwrite: bool = False,
                        source_rate: int | None = None) -> Path:
        """Convert straight to an audio file, block by block: memory stays bounded for any length.

        Written to a temporary file beside ``path`` and renamed at the end, so ``path`` is either
        complete or absent. Refuses to replace an existing file unless ``overwrite``.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in OUTPUT_FORMATS:
            raise VoiceconvError(f"{path}: unsupported output extension {suffix or '(none)'}; use one of "
                                 f"{', '.join(OUTPUT_FORMATS)}")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
        src, speaker, semitones = self._prepare(source, speaker, pitch, source_rate)
        file_format, subtype = OUTPUT_FORMATS[suffix]
        with atomic_path(path, suffix) as temp, sf.SoundFile(str(temp), "w", samplerate=self.sample_rate,
                                                             channels=1, format=file_format, subtype=subtype) as out:
            for block in self._blocks(src, speaker, semitones, None):
                if not np.isfinite(np.sum(block, dtype=np.float64)):
                    raise VoiceconvError("the conversion produced NaN or Inf samples; the model or vocoder "
                                         "weights are broken")
                out.write(np.clip(block, -1.0, 1.0))
        return path

    # ---- streaming ------------------------------------------------------------------------------

    def stream(self, chunks: Iterable, speaker, pitch=None, **options) -> Iterator[torch.Tensor]:
        """Convert a live stream: consume audio blocks at :attr:`sample_rate`, yield converted blocks.

        Yields one ``(block_size,)`` float32 tensor per ``block_size`` samples consumed, delayed by a
        constant ``latency_samples`` (the first blocks are silence); when ``chunks`` ends the rest is
        flushed. ``options`` go to :class:`voiceconv.convert.streaming.StreamingConverter` (block size,
        history, lookahead). ``pitch``: None or semitones (``"auto"`` needs the whole source; compute
        it once with :meth:`auto_pitch` on a sample of the source voice).
        """
        from voiceconv.convert.streaming import StreamingConverter

        streamer = StreamingConverter(self, speaker, pitch=pitch, **options)
        return streamer.run(chunks)


def _as_clip_list(refs) -> list:
    """One clip or a list of clips -> list. A ``(rate, array)`` tuple is one clip, not two."""
    if isinstance(refs, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return [refs]
    if isinstance(refs, tuple) and len(refs) == 2 and (np.isscalar(refs[0]) or np.isscalar(refs[1])):
        return [refs]
    if isinstance(refs, (list, tuple)):
        return list(refs)
    raise VoiceconvError(f"references must be a path, an array, a (rate, array) tuple or a list of those; "
                         f"got {type(refs).__name__}")
