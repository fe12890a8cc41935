"""Streaming latency and fidelity: algorithmic latency, compute per block, and distance to offline conversion.

Usage::

    python benchmarks/streaming_latency.py --model random                 # random-init default config
    python benchmarks/streaming_latency.py --model exp/vc --vocoder exp/vocoder --block-frames 4 6 8
    python benchmarks/streaming_latency.py --model voiceconv/pretrained --source speech.wav --lookahead 2 3 6

For every (block size, lookahead) it streams the source block by block through
``StreamingConverter`` and reports:

- algorithmic latency = delay + one block (what the stream adds even with infinitely fast compute);
- compute per block: wall-clock mean / p95 / max after a warm-up, and CPU time per block (all
  threads), which is what the block costs on idle cores when the machine is shared;
- total latency = algorithmic + p95 compute; real time needs p95 compute < block duration;
- fidelity: mean |log-mel(streamed) - log-mel(offline)| over mean |log-mel(offline) - log-mel(source)|,
  i.e. how much of what conversion changes the stream gets differently (0 = identical to offline).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random", help="model directory, or 'random' (default)")
    parser.add_argument("--vocoder", default=None, help="vocoder directory or 'griffin-lim'")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--block-frames", type=int, nargs="+", default=[4, 6, 8], help="block sizes in frames")
    # Unset, these are StreamingConverter's defaults (filled in after parsing, so --help imports no torch),
    # and a plain run measures what a user gets.
    parser.add_argument("--lookahead", type=int, nargs="+", default=None,
                        help="model lookahead frames (default: StreamingConverter's)")
    parser.add_argument("--vocoder-lookahead", type=int, default=None,
                        help="vocoder lookahead frames (default: StreamingConverter's)")
    parser.add_argument("--history", type=int, default=None,
                        help="model history frames (default: StreamingConverter's)")
    parser.add_argument("--vocoder-history", type=int, default=None,
                        help="vocoder history frames (default: StreamingConverter's default)")
    parser.add_argument("--norm", default="running", choices=["running", "local"], help="instance-norm statistics")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic source")
    parser.add_argument("--source", default=None, help="a recording to stream instead of synthetic speech")
    parser.add_argument("--target", nargs="*", default=None, help="target reference clips (default: synthetic)")
    args = parser.parse_args()
    from voiceconv.convert import streaming

    if args.lookahead is None:
        args.lookahead = [streaming.DEFAULT_LOOKAHEAD_FRAMES]
    if args.vocoder_lookahead is None:
        args.vocoder_lookahead = streaming.DEFAULT_VOCODER_LOOKAHEAD
    if args.history is None:
        args.history = streaming.DEFAULT_HISTORY_FRAMES

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from convert_speed import random_model
    from helpers import synthetic_voice

    from voiceconv.audio import load_audio
    from voiceconv.convert.converter import VoiceConverter
    from voiceconv.convert.streaming import StreamingConverter
    from voiceconv.features import MelSpectrogram

    with tempfile.TemporaryDirectory() as tmp:
        model, vocoder = args.model, args.vocoder
        if model == "random":
            model, vocoder_dir = random_model(Path(tmp))
            vocoder = vocoder or vocoder_dir
        vc = VoiceConverter.from_pretrained(model, vocoder=vocoder, device="cpu")
    rate = vc.sample_rate
    if args.source:
        audio = load_audio(args.source, rate)
    else:
        voices = [(110, (600.0, 1100.0, 2500.0)), (150, (700.0, 1300.0, 2700.0))]
        pieces = [synthetic_voice(*voices[i % 2], 2.0, rate, seed=i) for i in range(int(args.seconds / 2))]
        audio = np.concatenate(pieces)
    targets = args.target or [synthetic_voice(215, (850.0, 1600.0, 2900.0), 3.0, rate, seed=7)]
    speaker = vc.embed_speaker(targets)
    offline = vc.convert(audio, speaker, pitch=None)
    frontend = MelSpectrogram(vc.mel_config)
    mel_offline, mel_source = frontend(offline), frontend(torch.from_numpy(audio))

    print(f"# {os.cpu_count()} CPUs visible, torch threads {args.threads}, model {args.model}, "
          f"vocoder {'neural' if vc.vocoder.is_neural else 'griffin-lim'}, history {args.history}, "
          f"vocoder history {args.vocoder_history or 'default'}, vocoder lookahead {args.vocoder_lookahead}, "
          f"norm {args.norm}, {audio.size / rate:.0f} s source")
    print(f"{'block ms':>8} {'lookahead':>9} {'algo ms':>8} {'mean ms':>8} {'p95 ms':>7} {'max ms':>7} "
          f"{'CPU ms':>7} {'total ms':>9} {'real time':>9} {'vs offline':>10}")
    for block_frames in args.block_frames:
        for lookahead in args.lookahead:
            streamer = StreamingConverter(vc, speaker, block_frames=block_frames, history_frames=args.history,
                                          lookahead_frames=lookahead, vocoder_lookahead=args.vocoder_lookahead,
                                          vocoder_history=args.vocoder_history,
                                          norm=args.norm)
            out, cpu = [], []
            for start in range(0, audio.size, streamer.block_size):
                before = _cpu()
                out.extend(streamer.push(audio[start : start + streamer.block_size]))
                cpu.append(_cpu() - before)
            out.extend(streamer.flush())
            stream = torch.cat(out)[streamer.delay_samples :]
            warm = max(1, int(2.0 * rate / streamer.block_size))  # skip the first 2 s (history filling up)
            wall = np.array(streamer.compute_seconds[warm:]) * 1000
            cpu_ms = np.array(cpu[warm:]) * 1000
            block_ms = streamer.block_size / rate * 1000
            skip = args.history + block_frames
            fidelity = float((frontend(stream) - mel_offline)[:, skip:].abs().mean()
                             / (mel_offline - mel_source)[:, skip:].abs().mean())
            p95 = float(np.percentile(wall, 95))
            print(f"{block_ms:8.1f} {lookahead:9d} {streamer.latency_seconds * 1000:8.1f} {wall.mean():8.1f} "
                  f"{p95:7.1f} {wall.max():7.1f} {cpu_ms.mean():7.1f} {streamer.latency_seconds * 1000 + p95:9.1f} "
                  f"{'yes' if p95 < block_ms else 'no':>9} {fidelity:10.3f}", flush=True)


if __name__ == "__main__":
    main()
