"""Real-time conversion of a live stream with a constant latency.

::

    streamer = StreamingConverter(vc, speaker)            # or: for block in vc.stream(blocks, speaker)
    for block in microphone(streamer.block_size):          # blocks of block_size samples at vc.sample_rate
        for out in streamer.push(block):
            speaker_output.write(out)
    for out in streamer.flush():
        speaker_output.write(out)

It is the offline engine (:mod:`voiceconv.convert.engine`) with one-block windows. Each block, the VC
model runs on ``history_frames`` of past context + the block + ``lookahead_frames``, and the
vocoder on its own history + the block + ``vocoder_lookahead`` frames; the window grids are offset
so that every stage can run the moment a block arrives. The output is the offline conversion
delayed by :attr:`StreamingConverter.delay_samples`, except that

- instance norm cannot see the whole utterance: each window normalises with running statistics
  over everything converted so far plus its own core and lookahead (``norm="running"``; they
  converge to the utterance's statistics), or with its own ``history_frames`` of context
  (``norm="local"``), and
- the last frames of each window lack the right context the convolutions would like (the
  receptive field is +-144 frames; a 200 ms latency budget allows a few), so they differ from the
  offline result by however much the trained model relies on future frames.

``benchmarks/streaming_latency.py`` measures both the latency and the distance to offline
conversion for a given model.

Latency: a sample captured at the start of a block leaves ``delay_samples + block_size`` samples
later, plus the time to process one block (``compute_seconds``). :attr:`latency_seconds` is the
algorithmic part, ``delay + block``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from voiceconv.convert.engine import ConversionEngine, vocoder_receptive_field
from voiceconv.convert.pitch import parse_pitch
from voiceconv.convert.windows import streaming_plan
from voiceconv.errors import AudioError, VoiceconvError

DEFAULT_BLOCK_FRAMES = 6  # 70 ms blocks at 22.05 kHz / hop 256
DEFAULT_HISTORY_FRAMES = 120  # 1.4 s of past context: IN statistics over about the training segment length
# Model lookahead: 23 ms. Streaming examples/source.wav with the shipped round 18, 2 frames of lookahead left
# the stream about as close to offline conversion as 3 did (the distance as a share of the conversion's own
# change: 0.248 vs 0.247 in 46 ms blocks, 0.231 vs 0.225 in the default 70 ms blocks; on the benchmark's
# synthetic source 0.519 vs 0.510 and 0.486 vs 0.464) and cut the latency by 11.6 ms, to 138-141 ms with
# compute in 46 ms blocks (benchmarks/streaming_latency.py).
DEFAULT_LOOKAHEAD_FRAMES = 2
DEFAULT_VOCODER_LOOKAHEAD = 2  # the inverse STFT overlaps 4 frames: 2 ahead complete a frame's overlap-add
# Vocoder history cap. The shipped vocoder's phase refinement widens its formal receptive field to 127
# frames, but the influence of far frames decays fast. Streaming examples/source.wav in 46 ms blocks, the
# output with H frames of history differs from the one with the full 127 by (relative L2) 5e-7 at H = 64,
# 2e-6 at 48, 3.5e-6 at 40, 2e-4 at 32 and 2.3e-2 at 24; from 64 to 40 the per-block compute (p95,
# 2 threads) falls by about 5 ms. HiFi-GAN (25 frames) and the plain iSTFT head (31) are under the cap
# and stay exact.
MAX_DEFAULT_VOCODER_HISTORY = 40


class StreamingConverter:
    """Block-in, block-out voice conversion with a constant delay.

    ``speaker``: a Speaker, a ``.spk`` path or a ``(D,)`` vector. ``pitch``: None or semitones.
    ``vocoder_history``: past frames the vocoder sees (default: its receptive field, which makes
    the history exact, capped at 40 frames, see MAX_DEFAULT_VOCODER_HISTORY). ``norm``: ``"running"``
    or ``"local"`` instance-norm statistics (see above).
    """

    def __init__(self, vc, speaker, pitch=None, block_frames: int = DEFAULT_BLOCK_FRAMES,
                 history_frames: int = DEFAULT_HISTORY_FRAMES, lookahead_frames: int = DEFAULT_LOOKAHEAD_FRAMES,
                 vocoder_history: int | None = None, vocoder_lookahead: int = DEFAULT_VOCODER_LOOKAHEAD,
                 norm: str = "running"):
        speaker = vc.load_speaker(speaker)
        pitch = parse_pitch(pitch)
        if pitch == "auto":
            raise VoiceconvError(
                "pitch='auto' needs the whole source to estimate its pitch range, which a stream does not have; "
                "pass a number of semitones (e.g. vc.auto_pitch(a_sample_of_the_source, speaker)) or None"
            )
        if block_frames < 1 or history_frames < 0 or lookahead_frames < 0 or vocoder_lookahead < 0:
            raise VoiceconvError("block_frames must be >= 1 and history/lookahead frames >= 0")
        self.sample_rate = vc.sample_rate
        config = vc.mel_config
        self.block_size = block_frames * config.hop_length
        if vocoder_history is None:
            vocoder_history = min(vocoder_receptive_field(vc.vocoder), MAX_DEFAULT_VOCODER_HISTORY)
        plan = streaming_plan(block_frames, history_frames, lookahead_frames, vocoder_history, vocoder_lookahead,
                              config.hop_length, config.n_fft)
        # Running statistics start once a history's worth of frames is final; before that, local ones.
        self.engine = ConversionEngine(vc.model, vc.vocoder, speaker.embedding, pitch or 0.0, plan, vc.device,
                                       norm=norm, min_running_frames=history_frames)
        self.delay_samples = self._delay()
        self._pending = np.zeros(self.delay_samples, np.float32)  # output not yet yielded, starting with the delay
        self._consumed = 0  # input samples pushed
        self._yielded = 0  # output samples yielded
        self.compute_seconds: list[float] = []  # wall time of each push()
        self._finished = False

    def _delay(self) -> int:
        """Largest gap between input pushed and output final, over block boundaries: the constant delay."""
        delay = 0
        for blocks in range(1, 257):  # the gap is periodic after the first windows; 256 blocks is ample
            received = blocks * self.block_size
            delay = max(delay, received - self.engine.planned_output(received))
        return delay

    @property
    def latency_seconds(self) -> float:
        """Algorithmic latency: delay + one block (add :attr:`compute_seconds` for the total)."""
        return (self.delay_samples + self.block_size) / self.sample_rate

    def push(self, block) -> Iterator[torch.Tensor]:
        """Feed input samples ``(n,)`` (ideally ``block_size`` of them); yield the output blocks now due."""
        if self._finished:
            raise VoiceconvError("this stream was flushed; start a new StreamingConverter")
        samples = _as_mono(block)
        start = time.perf_counter()
        out = self.engine.push(samples)
        self.compute_seconds.append(time.perf_counter() - start)
        self._consumed += samples.size
        self._pending = np.concatenate([self._pending, out])
        # One output block per input block consumed: the delay guarantees the samples are there.
        while self._yielded + self.block_size <= self._consumed:
            if self._pending.size < self.block_size:
                raise RuntimeError("streaming engine fell behind its planned delay")  # internal invariant
            yield self._take(self.block_size)

    def flush(self) -> Iterator[torch.Tensor]:
        """End of input: yield the rest (the last ``delay`` samples of conversion), in blocks."""
        if self._finished:
            return
        self._finished = True
        self._pending = np.concatenate([self._pending, self.engine.finish()])
        while self._pending.size:
            yield self._take(min(self.block_size, self._pending.size))

    def run(self, chunks: Iterable) -> Iterator[torch.Tensor]:
        for chunk in chunks:
            yield from self.push(chunk)
        yield from self.flush()

    def _take(self, n: int) -> torch.Tensor:
        out, self._pending = self._pending[:n], self._pending[n:]
        self._yielded += n
        return torch.from_numpy(np.ascontiguousarray(out))


def _as_mono(block) -> np.ndarray:
    if isinstance(block, torch.Tensor):
        block = block.detach().cpu().float().numpy()
    samples = np.asarray(block)
    if samples.dtype.kind not in "f":
        raise AudioError(f"stream blocks must be float samples in [-1, 1], got dtype {samples.dtype}")
    samples = samples.astype(np.float32, copy=False).reshape(-1) if samples.ndim <= 1 else None
    if samples is None:
        raise AudioError("stream blocks must be mono (n,) arrays at the model's sample rate")
    if not np.isfinite(np.sum(samples, dtype=np.float64)):
        raise AudioError("a stream block contains NaN or Inf samples")
    return samples
