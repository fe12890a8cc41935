"""Conversion of any length in bounded memory: the engine behind ``convert``, ``convert_to_file`` and ``stream``.

The pipeline is three incremental stages, each fed as much audio as has arrived::

    audio --MelStream--> log-mel --model windows--> converted log-mel --vocoder windows--> audio

The stages are in :mod:`voiceconv.convert.windows`:

- :class:`MelStream` computes exactly the frames :class:`~voiceconv.features.MelSpectrogram` gives
  for the whole signal (same reflect padding at the two ends), optionally pitch-shifted.
- :class:`WindowedStage` runs a function on overlapping windows: window ``k`` owns the *core*
  frames ``[B_k, B_k+1)`` and also sees ``left`` frames before and ``right`` after; the outputs are
  joined with a linear crossfade of ``fade`` output samples centred on each core boundary.

Memory is bounded by the window sizes, never by the input length; only the caller's output
buffer (if it keeps one) grows.

**Exactness.** Convolutions only see their receptive field, so with enough context a window's
core equals the whole-utterance result. AdaIN-VC's instance norm is different: it normalises
each channel over *all* frames it is given, so every window uses its own statistics. We keep
those statistics local on purpose: the model is trained on segments of about 1.5 s, windows of
30 s are already far longer than that, and utterance-global statistics over an hour of audio
would be no closer to what the model learned. (Estimating utterance statistics in extra passes
and freezing them is not exact either: every layer's statistics depend on the layers before, and
iterating the estimate diverged on untrained models.) Consequences, each covered by a test:

- an input up to ``model_core`` frames (29.7 s by default) is converted in one piece: identical
  to converting the whole utterance;
- longer inputs match whole-utterance conversion closely away from window edges, up to the
  difference between the windows' and the utterance's frame statistics;
- the vocoder stage is exact for the neural vocoders (they are convolutional); Griffin-Lim is
  only approximately local, and its joins are crossfaded.

Streaming (:mod:`voiceconv.convert.streaming`) uses the same stages with one-block windows; there the
instance norm can instead use running statistics of everything converted so far
(``norm="running"``, through :func:`voiceconv.models.layers.instance_norm_hook`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from voiceconv.convert.windows import ChunkPlan, MelStream, NormStats, WindowedStage, WindowInfo, WindowNorm
from voiceconv.models.layers import instance_norm_hook

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# the engine


class ConversionEngine:
    """Push source audio ``(n,)`` at the model rate, get converted audio; :meth:`finish` returns the rest.

    The concatenated output has exactly as many samples as were pushed.
    """

    def __init__(self, model, vocoder, speaker_embedding: torch.Tensor, semitones: float = 0.0,
                 plan: ChunkPlan | None = None, device: torch.device | None = None, norm: str = "local",
                 min_running_frames: int = 0):
        """``norm``: where instance norm takes its statistics in each window: ``"local"`` (the
        window's own frames) or ``"running"`` (streaming: every frame already final plus this
        window's core and lookahead, once ``min_running_frames`` frames are final; the statistics
        then converge to the utterance's). ``vocoder=None`` runs the model stage only.
        """
        if norm not in ("local", "running"):
            raise ValueError(f"norm must be 'local' or 'running', got {norm!r}")
        self.model, self.vocoder = model, vocoder
        self.plan = plan = plan or ChunkPlan()
        self.device = device or next(model.parameters()).device
        self.speaker = speaker_embedding.to(self.device, torch.float32).reshape(1, -1)  # (1, D)
        self.mel_config = model.mel_config
        self.hop = self.mel_config.hop_length
        self.mel = MelStream(self.mel_config, semitones)
        self.norm, self.min_running_frames = norm, min_running_frames
        self.running = NormStats() if norm == "running" else None
        self.rates: tuple[int, ...] | None = None  # per instance-norm call, found on first use
        self.model_stage = WindowedStage(self._convert_window, plan.model_core, plan.model_left, plan.model_right,
                                         plan.model_fade, 1, plan.model_first, align=model_stride(model))
        self.vocoder_stage = None
        if vocoder is not None:
            context = vocoder_receptive_field(vocoder) + 8
            self.vocoder_stage = WindowedStage(
                self._vocode_window, plan.vocoder_core,
                context if plan.vocoder_left is None else plan.vocoder_left,
                context if plan.vocoder_right is None else plan.vocoder_right,
                plan.vocoder_fade, self.hop, plan.vocoder_first,
            )
        self.received = 0
        self.emitted = 0
        self.record_mel: list[torch.Tensor] | None = None  # set to [] to keep the converted mel (tests)

    @torch.inference_mode()
    def _convert_window(self, mel: torch.Tensor, info: WindowInfo) -> torch.Tensor:
        mel = mel.unsqueeze(0).to(self.device)  # (1, n_mels, T)
        if self.running is None:
            return self.model.convert(mel, self.speaker)[0].float().cpu()
        if self.rates is None:
            self.rates = norm_call_rates(self.model, self.speaker)
        hook = WindowNorm(info, self.rates, self.running, self.min_running_frames)
        with instance_norm_hook(hook):
            out = self.model.convert(mel, self.speaker)  # (1, n_mels, T)
        self.running.frames += info.end - info.start
        return out[0].float().cpu()

    @torch.inference_mode()
    def _vocode_window(self, mel: torch.Tensor, info: WindowInfo) -> torch.Tensor:
        # One piece: our window already carries the context the vocoder's own chunking would add.
        return self.vocoder.decode(mel, chunk_frames=mel.shape[-1], context_frames=0)

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        self.received += audio.size
        return self._through(self.mel.push(audio), finish=False)

    def finish(self) -> np.ndarray:
        out = self._through(self.mel.finish(), finish=True)
        # The mel was taken over a whole number of hops; cut the padding back off.
        excess = self.emitted - self.received
        if excess > 0:
            out = out[: out.size - excess]
            self.emitted -= excess
        return out

    def _through(self, mel: torch.Tensor, finish: bool) -> np.ndarray:
        converted = self.model_stage.push(mel)
        if finish:
            converted = torch.cat([converted, self.model_stage.finish()], dim=-1)
        if self.record_mel is not None and converted.shape[-1]:
            self.record_mel.append(converted)
        if self.vocoder_stage is None:
            return np.zeros(0, np.float32)
        audio = self.vocoder_stage.push(converted)
        if finish:
            audio = torch.cat([audio.reshape(-1), self.vocoder_stage.finish().reshape(-1)])
        audio = audio.reshape(-1).numpy()
        self.emitted += audio.size
        return audio

    def planned_output(self, received: int) -> int:
        """Output samples available after ``received`` input samples (input not finished)."""
        c = self.mel_config
        frames = max(0, (received + c.padding - c.n_fft) // c.hop_length + 1) if received > c.padding else 0
        converted = self.model_stage.planned_output(frames)
        return self.vocoder_stage.planned_output(converted) if self.vocoder_stage is not None else 0


def model_stride(model) -> int:
    """Time subsampling of the content encoder (8 for AdaIN-VC); windows start on multiples of it."""
    try:
        return int(model.config.content_encoder.total_stride)
    except AttributeError:
        return 8


def vocoder_receptive_field(vocoder) -> int:
    """Frames of context each side that can reach a vocoder output frame."""
    generator = getattr(vocoder, "generator", None)
    return int(getattr(generator, "receptive_field_frames", 64))


def norm_call_rates(model, speaker: torch.Tensor) -> tuple[int, ...]:
    """Input frames per frame at each instance-norm call of ``model.convert``, in call order.

    Found by running the model once on a probe whose length is a multiple of every stride, so each
    call's length divides it exactly (AdaIN-VC: 1, 1, ..., 8 in the encoder, back to 1 in the decoder).
    """
    probe_frames = 64 * model_stride(model)
    lengths: list[int] = []

    def record(x, mask, eps):
        lengths.append(x.shape[-1])
        mean = x.float().mean(dim=-1, keepdim=True)
        var = x.float().var(dim=-1, keepdim=True, unbiased=False)
        return ((x.float() - mean) * torch.rsqrt(var + eps)).to(x.dtype)

    mel = torch.full((1, model.mel_config.n_mels, probe_frames), model.mel_config.min_log, device=speaker.device)
    mel = mel + torch.randn(mel.shape, generator=torch.Generator().manual_seed(0)).to(speaker.device)
    with torch.inference_mode(), instance_norm_hook(record):
        model.convert(mel, speaker)
    return tuple(max(1, round(probe_frames / n)) for n in lengths)


def model_receptive_field(model) -> int:
    """Frames each side that reach a converted frame through the content encoder and decoder convs.

    Computed from the AdaIN-VC config (conv bank, two convs per block at the block's frame rate);
    instance norm is global and not counted. 144 for the default config, 71 for debug.yaml.
    """
    try:
        enc, dec = model.config.content_encoder, model.config.decoder
    except AttributeError:
        return 160
    reach, rate = enc.bank_size // 2, 1
    for stride in enc.subsample:
        reach += 2 * (enc.kernel_size // 2) * rate
        rate *= int(stride)
    for up in dec.upsample:
        reach += 2 * (dec.kernel_size // 2) * rate
        rate //= int(up)
    return int(reach)
