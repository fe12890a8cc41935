"""The windowed stages of the conversion engine (:mod:`voiceconv.convert.engine`).

- window plans: where each window's core frames start and end, for whole files and for streaming;
- :class:`MelStream`, the incremental mel front end;
- :class:`WindowedStage`, a function run on overlapping windows whose outputs are crossfaded, with
  each window's instance-norm statistics (:class:`NormStats`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from voiceconv.convert.pitch import shift_magnitude
from voiceconv.errors import AudioError
from voiceconv.features import MelConfig, MelSpectrogram

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# plans


@dataclass
class ChunkPlan:
    """Window sizes for the two model stages, in mel frames (vocoder fade in samples).

    Defaults are for offline conversion; :func:`streaming_plan` builds the low-latency variant.
    """

    model_core: int = 2560  # frames per model window (29.7 s at 22.05 kHz): most recordings convert in one piece
    model_left: int = 256  # context before the core (3 s): past the default model's +-144-frame receptive field
    model_right: int = 256  # context after the core: same reasoning
    model_fade: int = 128  # crossfade (1.5 s) that hides the change of instance-norm statistics between windows
    model_first: int | None = None  # end of the first core (None: model_core); streaming offsets it
    vocoder_core: int = 1024  # frames per vocoder window (11.9 s, the Vocoder.decode chunk)
    vocoder_left: int | None = None  # None: the vocoder's receptive field + 8
    vocoder_right: int | None = None  # None: the vocoder's receptive field + 8
    vocoder_fade: int = 512  # samples (2 hops): exact vocoders do not need it, Griffin-Lim's phase seams do
    vocoder_first: int | None = None  # end of the first vocoder core (None: vocoder_core)


def streaming_plan(block_frames: int, history_frames: int, lookahead_frames: int, vocoder_history: int,
                   vocoder_lookahead: int, hop_length: int, n_fft: int, vocoder_fade: int = 0) -> ChunkPlan:
    """A plan whose windows complete exactly when a block of ``block_frames`` frames has arrived.

    Cores are one block long; the first cores are offset so that model window ``k`` can run as soon
    as its ``lookahead_frames`` right context exists, and vocoder window ``k`` as soon as its own
    lookahead exists, so no stage waits for a later block.
    """
    mel_lag = _mel_lag_frames(hop_length, n_fft)
    # Frames available after p blocks: p * block - mel_lag; model core ends must sit lookahead before that.
    model_first = _first_boundary(block_frames, mel_lag + lookahead_frames)
    vocoder_first = _first_boundary(block_frames, mel_lag + lookahead_frames + vocoder_lookahead)
    return ChunkPlan(
        model_core=block_frames, model_left=history_frames, model_right=lookahead_frames, model_fade=0,
        model_first=model_first, vocoder_core=block_frames, vocoder_left=vocoder_history,
        vocoder_right=vocoder_lookahead, vocoder_fade=vocoder_fade, vocoder_first=vocoder_first,
    )


def _mel_lag_frames(hop_length: int, n_fft: int) -> int:
    """Frames still missing when a whole number of hops has arrived: frame j needs j*hop + n_fft - pad samples."""
    pad = (n_fft - hop_length) // 2
    return math.ceil((n_fft - pad) / hop_length) - 1


def _first_boundary(block: int, lag: int) -> int:
    """Smallest positive boundary b with b + lag == p * block for some p."""
    first = (-lag) % block
    return first if first > 0 else block


# --------------------------------------------------------------------------------------------------
# mel front end


class MelStream:
    """Incremental log-mel: push audio ``(n,)``, get the new frames ``(n_mels, k)``.

    After :meth:`finish` the concatenated frames equal ``MelSpectrogram(config)`` applied to the whole
    signal zero-padded to ``ceil(T / hop) * hop`` samples, with each frame's magnitude pitch-shifted by
    ``semitones`` (:func:`voiceconv.convert.pitch.shift_magnitude`) when that is non-zero.
    """

    def __init__(self, config: MelConfig, semitones: float = 0.0):
        self.config = config
        self.semitones = float(semitones or 0.0)
        self.hop, self.n_fft, self.pad = config.hop_length, config.n_fft, config.padding
        frontend = MelSpectrogram(config)
        self.window = frontend.window.float()
        self.basis = frontend.mel_basis.float()
        self._raw_head: list[np.ndarray] = []  # samples before the left reflect pad can be built
        self._buffer = np.zeros(0, np.float32)  # padded-signal samples from index _buffer_start
        self._buffer_start = 0
        self.received = 0  # raw samples pushed so far
        self.frames_out = 0
        self.total_frames: int | None = None  # known after finish()

    def push(self, audio: np.ndarray) -> torch.Tensor:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        self.received += audio.size
        if self._raw_head is not None:
            self._raw_head.append(audio)
            head = np.concatenate(self._raw_head)
            if head.size <= self.pad:
                return self._empty()
            # Left reflect pad, as torch's "reflect": x[pad], ..., x[1], then the signal.
            self._buffer = np.concatenate([head[1 : self.pad + 1][::-1], head])
            self._raw_head = None
        else:
            self._buffer = np.concatenate([self._buffer, audio])
        return self._emit()

    def finish(self) -> torch.Tensor:
        """The remaining frames; the signal is zero-padded to a whole number of hops, then reflect-padded."""
        if self._raw_head is not None:
            head = np.concatenate(self._raw_head) if self._raw_head else np.zeros(0, np.float32)
            if head.size <= self.pad:
                raise AudioError(f"audio of {head.size} samples is too short for one mel frame "
                                 f"(need more than {self.pad} samples)")
            self._raw_head = None
            self._buffer = np.concatenate([head[1 : self.pad + 1][::-1], head])
        total_frames = math.ceil(self.received / self.hop)
        self.total_frames = total_frames
        tail = np.zeros(total_frames * self.hop - self.received, np.float32)
        signal = np.concatenate([self._buffer, tail])
        # Right reflect pad of the zero-padded signal: its samples -2, -3, ..., -(pad + 1).
        self._buffer = np.concatenate([signal, signal[-self.pad - 1 : -1][::-1]])
        frames = self._emit()
        assert self.frames_out == total_frames, (self.frames_out, total_frames)
        return frames

    def _empty(self) -> torch.Tensor:
        return torch.zeros(self.config.n_mels, 0)

    def _emit(self) -> torch.Tensor:
        end = self._buffer_start + self._buffer.size  # padded-signal samples available
        last = (end - self.n_fft) // self.hop  # last frame whose window is complete
        if self.total_frames is not None:
            last = min(last, self.total_frames - 1)
        if last < self.frames_out:
            return self._empty()
        begin = self.frames_out * self.hop - self._buffer_start
        segment = self._buffer[begin : (last * self.hop + self.n_fft) - self._buffer_start]
        frames = self.frames(torch.from_numpy(np.ascontiguousarray(segment)))
        self.frames_out = last + 1
        keep = self.frames_out * self.hop - self._buffer_start
        self._buffer = self._buffer[keep:]
        self._buffer_start += keep
        return frames

    def frames(self, segment: torch.Tensor) -> torch.Tensor:
        """Log-mel of an already padded segment, one frame per hop, ``(n_mels, frames)``."""
        c = self.config
        spec = torch.stft(segment[None], n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                          window=self.window, center=False, return_complex=True)  # (1, n_bins, frames)
        # The same magnitude as MelSpectrogram (the 1e-9 keeps log() finite at exact zeros).
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        magnitude = shift_magnitude(magnitude, self.semitones, c.sample_rate)
        mel = torch.matmul(self.basis, magnitude)  # (1, n_mels, frames)
        return torch.log(torch.clamp(mel, min=c.log_clamp))[0]


# --------------------------------------------------------------------------------------------------
# windowed stages


@dataclass
class WindowInfo:
    """Where a window sits: input ``[begin, ...)``, core ``[start, end)``; first/last window of the sequence."""

    begin: int
    start: int
    end: int
    first: bool
    last: bool


class NormStats:
    """Per-channel sums of the inputs of each instance-norm call of the model, over many windows.

    Call ``i`` of every window forward is the same layer, so sums indexed by call order add up
    that layer's statistics over the whole utterance (each window contributes its core frames).
    """

    def __init__(self):
        self.sums: list[torch.Tensor] = []  # (C,) float64 per call
        self.squares: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.frames = 0  # input frames whose cores have been added

    def add(self, i: int, x: torch.Tensor) -> None:
        """Add ``x (C, n)``, the core frames of call ``i``."""
        while len(self.sums) <= i:
            self.sums.append(torch.zeros(x.shape[0], dtype=torch.float64))
            self.squares.append(torch.zeros(x.shape[0], dtype=torch.float64))
            self.counts.append(0)
        x = x.double()
        self.sums[i] += x.sum(dim=-1)
        self.squares[i] += x.pow(2).sum(dim=-1)
        self.counts[i] += x.shape[-1]

    def has(self, i: int) -> bool:
        return i < len(self.counts) and self.counts[i] > 0

    def moments(self, i: int, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (biased) variance ``(C, 1)`` of call ``i``, optionally including frames ``extra (C, n)``."""
        total, squares, count = self.sums[i], self.squares[i], self.counts[i]
        if extra is not None and extra.shape[-1]:
            extra = extra.double()
            total, squares, count = total + extra.sum(-1), squares + extra.pow(2).sum(-1), count + extra.shape[-1]
        mean = total / count
        var = (squares / count - mean.pow(2)).clamp_min(0.0)
        return mean.float().unsqueeze(-1), var.float().unsqueeze(-1)


class WindowNorm:
    """Instance-norm hook for one streaming window: running statistics instead of the window's own.

    Each call normalises with the statistics of everything already final (``running``) plus this
    window's core and lookahead, then adds the core to ``running``. Until ``min_frames`` input frames
    are final it uses the window's own statistics, as plain instance norm would.
    """

    def __init__(self, info: WindowInfo, rates: tuple[int, ...], running: NormStats, min_frames: int = 0):
        """``rates[i]``: input frames per frame of the tensor that instance-norm call ``i`` sees."""
        self.info, self.rates = info, rates
        self.running, self.min_frames = running, min_frames
        self.calls = 0

    def _core(self, call: int, frames: int) -> tuple[int, int]:
        """The layer frames of this window's core: frame j at rate r sits on input frame begin + r * j."""
        rate, info = self.rates[call], self.info
        low = 0 if info.first else -(-(info.start - info.begin) // rate)
        high = frames if info.last else -(-(info.end - info.begin) // rate)
        return low, high

    def __call__(self, x: torch.Tensor, mask, eps: float) -> torch.Tensor:
        if mask is not None or x.shape[0] != 1:
            raise RuntimeError("windowed instance norm expects one unmasked sequence")  # internal invariant
        i = self.calls
        self.calls += 1
        xf = x.float()
        low, high = self._core(i, x.shape[-1])
        if self.running.has(i) and self.running.frames >= self.min_frames:
            mean, var = self.running.moments(i, extra=xf[0, :, low:])  # past cores + this core and lookahead
        else:
            mean = xf.mean(dim=-1, keepdim=True)[0]
            var = xf.var(dim=-1, keepdim=True, unbiased=False)[0]
        self.running.add(i, xf[0, :, low:high])
        return ((xf - mean) * torch.rsqrt(var + eps)).to(x.dtype)


class _Joiner:
    """Joins pieces along the last axis; each piece starts where the previous piece's held tail starts,
    and the overlap is crossfaded linearly (the ramp spans ``fade`` items)."""

    def __init__(self, fade: int):
        self.fade = int(fade)
        self.tail: torch.Tensor | None = None
        self.ramp = (torch.arange(self.fade, dtype=torch.float32) + 0.5) / max(self.fade, 1)

    def push(self, piece: torch.Tensor, hold: int) -> torch.Tensor:
        """Emit ``piece`` (blended with the held tail) except its last ``hold`` items, which are held."""
        parts = []
        if self.tail is not None and self.tail.shape[-1]:
            overlap = min(self.tail.shape[-1], piece.shape[-1])
            ramp = self.ramp[:overlap].to(piece.dtype)
            parts.append(self.tail[..., :overlap] * (1 - ramp) + piece[..., :overlap] * ramp)
            piece = piece[..., overlap:]
        hold = min(hold, piece.shape[-1])
        parts.append(piece[..., : piece.shape[-1] - hold])
        self.tail = piece[..., piece.shape[-1] - hold :] if hold else None
        return torch.cat(parts, dim=-1)

    def flush(self, limit: int) -> torch.Tensor:
        """Emit at most ``limit`` items of a held tail (when the input ended on a core boundary)."""
        tail = self.tail if self.tail is not None else torch.zeros(0)
        self.tail = None
        return tail[..., :limit]


class WindowedStage:
    """Apply ``fn`` to overlapping windows of a growing sequence ``(C, n)`` and join the outputs.

    ``fn(x (C, m), info: WindowInfo) -> (..., m * scale)`` must be aligned with its input (output
    item ``i * scale`` belongs to input item ``i``). Window ``k`` owns the core ``[B_k, B_k+1)`` with ``B_0 = 0``,
    ``B_1 = first`` and ``B_k+1 = B_k + core``; it is given ``[B_k - left, B_k+1 + right)`` (clipped
    to the sequence, its start rounded down to a multiple of ``align`` so a strided model sees the
    same subsampling phase as on the whole sequence), and contributes the output of its core plus
    ``fade / 2`` on each side, crossfaded with the neighbours.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], core: int, left: int, right: int,
                 fade: int = 0, scale: int = 1, first: int | None = None, align: int = 1):
        first = core if first is None else first
        if core < 1 or first < 1 or left < 0 or right < 0:
            raise ValueError(f"bad window plan: core={core}, first={first}, left={left}, right={right}")
        if fade % 2 or fade > core * scale or fade > first * scale or fade // 2 > min(left, right) * scale:
            raise ValueError(f"fade {fade} must be even, at most one core and at most twice the context")
        self.fn, self.core, self.left, self.right = fn, core, left, right
        self.fade, self.scale, self.first, self.align = fade, scale, first, align
        self._joiner = _Joiner(fade)
        self._buffer: torch.Tensor | None = None
        self._buffer_start = 0
        self.received = 0
        self.emitted = 0  # output items emitted
        self._k = 0  # next window

    def boundary(self, k: int) -> int:
        return 0 if k == 0 else self.first + (k - 1) * self.core

    def push(self, items: torch.Tensor) -> torch.Tensor:
        if items.shape[-1]:
            self._buffer = items if self._buffer is None else torch.cat([self._buffer, items], dim=-1)
            self.received += items.shape[-1]
        outputs = []
        while self.boundary(self._k + 1) + self.right <= self.received:
            outputs.append(self._run(self._k, self.received, last=False))
        return self._cat(outputs)

    def finish(self) -> torch.Tensor:
        total = self.received
        outputs = []
        while self.boundary(self._k) < total:
            outputs.append(self._run(self._k, total, last=self.boundary(self._k + 1) >= total))
        if self.emitted < total * self.scale:
            outputs.append(self._joiner.flush(total * self.scale - self.emitted))
            self.emitted += outputs[-1].shape[-1]
        assert self.emitted == total * self.scale, (self.emitted, total, self.scale)
        return self._cat(outputs)

    def _cat(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        outputs = [o for o in outputs if o.shape[-1]]
        if not outputs:
            return torch.zeros(0) if self.scale > 1 else torch.zeros(self._channels(), 0)
        return torch.cat(outputs, dim=-1)

    def _channels(self) -> int:
        return self._buffer.shape[0] if self._buffer is not None and self._buffer.dim() > 1 else 0

    def _run(self, k: int, available: int, last: bool) -> torch.Tensor:
        start, end = self.boundary(k), min(self.boundary(k + 1), available)
        begin_in = max(0, start - self.left) // self.align * self.align
        end_in = min(available, end + self.right)
        x = self._buffer[..., begin_in - self._buffer_start : end_in - self._buffer_start]
        y = self.fn(x, WindowInfo(begin_in, start, end, k == 0, last))  # (..., (end_in - begin_in) * scale)
        s, half = self.scale, self.fade // 2
        keep_begin = 0 if k == 0 else start * s - half
        keep_end = end_in * s if last else min(end * s + half, end_in * s)
        piece = y[..., keep_begin - begin_in * s : keep_end - begin_in * s]
        # Hold back what the next window will crossfade: from its first kept item to our end.
        hold = 0 if last else max(0, keep_end - (end * s - half))
        out = self._joiner.push(piece, hold)
        self.emitted += out.shape[-1]
        self._k = k + 1
        # Keep what the next window's left context can reach (rounded down for alignment).
        drop = max(0, self.boundary(k + 1) - self.left) // self.align * self.align - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[..., drop:]
            self._buffer_start += drop
        return out

    def planned_output(self, available: int) -> int:
        """Output items emitted once ``available`` input items have arrived (input not finished)."""
        k = 0
        while self.boundary(k + 1) + self.right <= available:
            k += 1
        return max(0, self.boundary(k) * self.scale - (self.fade // 2 if k else 0)) if k else 0
