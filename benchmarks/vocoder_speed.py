"""Vocoder speed and memory on the CPU: every generator, same input, same run.

    python benchmarks/vocoder_speed.py                    # ~3-5 minutes on 2 cores
    python benchmarks/vocoder_speed.py --quick            # 10 s only, 1 repeat, no memory children

Prints, for the iSTFT generator (``istft``: the packaged config, plain Vocos head; ``istft_shipped``:
the configuration of the shipped default vocoder, whose generator adds Griffin-Lim phase-refinement
iterations and decodes in bf16 where the CPU has native bf16), HiFi-GAN V1/V2/V3 (random weights: speed does not depend
on them) and 32-iteration Griffin-Lim, on 10 s and 60 s of audio with 1 and 2 threads:

- RTF = compute seconds / audio seconds (median over repeats; lower is faster);
- speed-up versus HiFi-GAN V1 at the same threads and duration;
- peak memory of ``decode`` in a fresh process (RSS high-water mark during the decode, and its
  increase over the process with the model and the input loaded), 60 s input, 2 threads;
- peak memory of decoding a 10-minute mel with the shipped default configuration (chunked decoding).

All cases decode the same log-mel, computed from a synthetic harmonic "voice" with the project's
mel front end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import voiceconv
from voiceconv.features import MelConfig, MelSpectrogram
from voiceconv.training.vocoder_trainer import load_experiment
from voiceconv.vocoder.hifigan import PRESETS
from voiceconv.vocoder.model import Vocoder, VocoderConfig

GENERATORS = ["istft", "istft_shipped", "hifigan_v1", "hifigan_v2", "hifigan_v3", "griffin_lim"]
REFERENCE = "hifigan_v1"


def build(name: str) -> Vocoder:
    """A vocoder as inference uses it (HiFi-GAN with weight norm folded), random weights."""
    torch.manual_seed(0)
    if name == "griffin_lim":
        return Vocoder.griffin_lim(MelConfig(), n_iter=32, device="cpu")
    if name == "istft":
        # The shipped default: the model section of voiceconv/conf/vocoder_istft.yaml.
        vocoder = Vocoder(load_experiment(Path(voiceconv.__file__).parent / "conf" / "vocoder_istft.yaml").model)
    elif name == "istft_shipped":
        # What Vocoder.from_pretrained() builds: the shipped config.json's model section.
        shipped = json.loads((Path(voiceconv.__file__).parent / "pretrained" / "vocoder" / "config.json").read_text())
        vocoder = Vocoder(VocoderConfig.from_dict(shipped["config"]))
    else:
        vocoder = Vocoder(VocoderConfig(generator="hifigan", hifigan=PRESETS[name.split("_")[1]]))
        vocoder.generator.remove_weight_norm()
    return vocoder.eval()


def synthetic_mel(seconds: float, mel_config: MelConfig) -> torch.Tensor:
    """Log-mel ``(n_mels, T)`` of a voiced signal: 120-220 Hz harmonics with vibrato and syllable envelope.

    Ten seconds are synthesised and their mel is tiled to the length asked for, so that making a
    10-minute input does not itself raise the process's memory high-water mark.
    """
    sr = mel_config.sample_rate
    n_frames = int(round(seconds * sr / mel_config.hop_length))
    t = np.arange(int(min(seconds, 10.0) * sr)) / sr
    f0 = 170 + 50 * np.sin(2 * np.pi * 0.3 * t) + 4 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    audio = sum(np.sin(k * phase) / k for k in range(1, 30))
    audio *= 0.55 - 0.45 * np.cos(2 * np.pi * 4 * t)
    audio = (0.5 * audio / np.abs(audio).max()).astype(np.float32)
    with torch.no_grad():
        mel = MelSpectrogram(mel_config)(torch.from_numpy(audio))  # (n_mels, frames of <= 10 s)
    repeats = -(-n_frames // mel.shape[1])
    return mel.repeat(1, repeats)[:, :n_frames].contiguous()  # (n_mels, n_frames)


def time_decode(vocoder: Vocoder, mel: torch.Tensor, repeats: int, budget: float) -> tuple[float, int]:
    """Median seconds of ``decode(mel)`` over up to ``repeats`` runs (fewer when one run exceeds ``budget`` s)."""
    times = []
    while len(times) < repeats:
        start = time.perf_counter()
        vocoder.decode(mel)
        times.append(time.perf_counter() - start)
        if sum(times) > budget:
            break
    return statistics.median(times), len(times)


def memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (high-water mark) of this process from /proc, in MB.

    Not ``getrusage``: its ``ru_maxrss`` survives ``exec``, so a child would report its parent's peak.
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def child(name: str, seconds: float, threads: int) -> None:
    """Run in a fresh process: the RSS before one decode and the high-water mark during it."""
    torch.set_num_threads(threads)
    logging_off()
    mel = synthetic_mel(seconds, MelConfig())
    vocoder = build(name)
    vocoder.decode(mel[:, :50])  # one-time allocations (thread pools, kernels) are not the decode's
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current RSS, so the peak below is the decode's own
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    vocoder.decode(mel)
    elapsed = time.perf_counter() - start
    print(json.dumps({"before_mb": before, "peak_mb": memory_mb("VmHWM"), "seconds": elapsed}))


def logging_off() -> None:
    import logging

    logging.getLogger("voiceconv").setLevel(logging.ERROR)  # the Griffin-Lim warning is expected here


def measure_memory(name: str, seconds: float, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", name, str(seconds), str(threads)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0], help="audio seconds")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    parser.add_argument("--generators", nargs="+", default=GENERATORS, choices=GENERATORS)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="stop repeating a case once its runs took this many seconds (keeps V1 at 60 s short)")
    parser.add_argument("--long-minutes", type=float, default=10.0,
                        help="minutes of audio for the default generator's chunked-decoding memory check (0: skip)")
    parser.add_argument("--quick", action="store_true", help="10 s, 1 repeat, no memory measurements")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]), int(args.child[2]))
        return
    logging_off()
    if args.quick:
        args.durations, args.repeats, args.long_minutes = [10.0], 1, 0.0

    mel_config = MelConfig()
    full = synthetic_mel(max(args.durations), mel_config)
    frames_per_second = mel_config.sample_rate / mel_config.hop_length
    vocoders = {name: build(name) for name in args.generators}
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs visible, load average "
          f"{os.getloadavg()[0]:.2f}; input: one synthetic log-mel, {full.shape[1]} frames")
    print("parameters: " + ", ".join(f"{n} {v.n_parameters() / 1e6:.2f} M" for n, v in vocoders.items()))
    results: dict[tuple[str, int, float], float] = {}
    runs: dict[tuple[str, int, float], int] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, vocoder in vocoders.items():
            vocoder.decode(full[:, :100])  # warm-up: thread pool, allocator, kernel selection
            for seconds in args.durations:
                mel = full[:, : int(round(seconds * frames_per_second))]
                median, n = time_decode(vocoder, mel, args.repeats, args.budget)
                results[(name, threads, seconds)] = median / seconds
                runs[(name, threads, seconds)] = n

    memory = {}
    if not args.quick:
        for name in args.generators:
            memory[name] = measure_memory(name, max(args.durations), max(args.threads))

    print()
    header = f"{'generator':<13}{'threads':>8}{'audio s':>9}{'RTF':>9}{'runs':>6}{'vs V1':>9}"
    print(header + (f"   peak MB (increase) @ {max(args.durations):g} s, {max(args.threads)} threads"
                    if memory else ""))
    print("-" * (len(header) + (40 if memory else 0)))
    for name in args.generators:
        for threads in args.threads:
            for seconds in args.durations:
                rtf = results[(name, threads, seconds)]
                ref = results.get((REFERENCE, threads, seconds))
                ratio = f"{ref / rtf:8.1f}x" if ref else "       -"
                line = f"{name:<13}{threads:>8}{seconds:>9.0f}{rtf:>9.4f}{runs[(name, threads, seconds)]:>6}{ratio:>9}"
                if memory and threads == max(args.threads) and seconds == max(args.durations):
                    m = memory[name]
                    line += f"   {m['peak_mb']:.0f} (+{m['peak_mb'] - m['before_mb']:.0f})"
                print(line)
    if args.long_minutes > 0:
        m = measure_memory("istft_shipped", args.long_minutes * 60, max(args.threads))
        print(f"\n{args.long_minutes:g}-minute mel, shipped default vocoder config, chunked decode, "
              f"{max(args.threads)} threads: peak RSS {m['peak_mb']:.0f} MB "
              f"(+{m['peak_mb'] - m['before_mb']:.0f} MB over the loaded process), "
              f"RTF {m['seconds'] / (args.long_minutes * 60):.4f}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"\nWARNING: the machine was busy (load average {load:.1f} on {os.cpu_count()} CPUs). Wall-clock "
              "figures are inflated, multi-threaded ones most (threads wait for each other's time slices); "
              "rerun on an idle machine for figures to quote.")
    two = max(args.threads)
    for name, label in (("istft", "packaged istft config"), ("istft_shipped", "shipped default vocoder")):
        if name not in vocoders or REFERENCE not in vocoders:
            continue
        worst_ratio = min(results[(REFERENCE, t, s)] / results[(name, t, s)]
                          for t in args.threads for s in args.durations)
        worst_rtf = max(results[(name, two, s)] for s in args.durations)
        print(f"\n{label} vs HiFi-GAN V1: at least {worst_ratio:.1f}x faster (target >= 10x); "
              f"worst RTF with {two} threads {worst_rtf:.4f} (target <= 0.03)")


if __name__ == "__main__":
    main()
