"""End-to-end conversion speed and peak memory for 10 s, 60 s and 600 s recordings (issue 5, acceptance 1).

Usage::

    python benchmarks/convert_speed.py --model random            # random-init default config, default vocoder
    python benchmarks/convert_speed.py --model exp/vc --vocoder exp/vocoder --sizes 10 60 600 3600
    python benchmarks/convert_speed.py --model voiceconv/pretrained --source real.wav --threads 2

Each size runs in a fresh Python process, so its peak memory (``ru_maxrss``) is its own: model
loading, a 3-clip target embedding, then ``VoiceConverter.convert_to_file`` (what ``voiceconv
convert`` does: decode + resample block by block, pitch tracking for ``--pitch auto``, windowed
conversion, vocoder, streamed write). ``--api tensor`` measures ``convert()`` instead, which
also holds the whole output in memory. RTF = conversion seconds / audio seconds (model loading and
embedding are reported separately). CPU RTF = CPU seconds (all threads) / audio seconds: on a
machine shared with other jobs the wall-clock RTF is inflated, while CPU RTF / threads is what
the same work takes on idle cores (if it parallelises well; with 1 thread it is exact).

The source is synthetic speech at 16 kHz (so resampling to the 22.05 kHz model rate is included)
unless ``--source`` gives a recording, which is looped or cut to each size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE_RATE = 16000  # typical recording rate below the model's 22.05 kHz: resampling is part of the cost


def make_source(path: Path, seconds: float, source: str | None) -> None:
    """A ``seconds``-long WAV at 16 kHz: ``source`` looped/cut, else alternating synthetic voices."""
    import numpy as np
    import soundfile as sf

    if source:
        from voiceconv.audio import load_audio

        clip = load_audio(source, SOURCE_RATE)
        total = int(seconds * SOURCE_RATE)
        audio = np.resize(clip, total)  # repeats the clip as often as needed
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from helpers import synthetic_voice

        voices = [(110, (600.0, 1100.0, 2500.0)), (150, (700.0, 1300.0, 2700.0)), (125, (650.0, 1200.0, 2600.0))]
        pieces, done, i = [], 0.0, 0
        while done < seconds:
            f0, formants = voices[i % len(voices)]
            length = min(3.0, seconds - done)
            pieces.append(synthetic_voice(f0, formants, length, SOURCE_RATE, seed=i))
            done += length
            i += 1
        audio = np.concatenate(pieces)
    sf.write(path, audio, SOURCE_RATE, subtype="PCM_16")


def make_targets(directory: Path) -> list[Path]:
    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import synthetic_voice

    paths = []
    for k in range(3):
        path = directory / f"target{k}.wav"
        sf.write(path, synthetic_voice(210 + 5 * k, (850.0, 1600.0, 2900.0), 4.0, 22050, seed=50 + k), 22050)
        paths.append(path)
    return paths


def random_model(directory: Path) -> tuple[Path, Path]:
    """Save a random-init default-config VC model and default vocoder (for timing before training)."""
    import torch

    from voiceconv.models.vc_model import VCModel
    from voiceconv.vocoder.model import Vocoder

    torch.manual_seed(0)
    VCModel().save_pretrained(directory / "vc")
    Vocoder().save_pretrained(directory / "vocoder")
    return directory / "vc", directory / "vocoder"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args) -> None:
    """Measure one size in this process; print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    from voiceconv.convert.converter import VoiceConverter

    vc = VoiceConverter.from_pretrained(args.model, vocoder=args.vocoder, device="cpu", adapt_steps=args.adapt_steps)
    loaded = time.perf_counter()
    speaker = vc.embed_speaker(args.targets)
    embedded = time.perf_counter()
    cpu_start = _cpu_seconds()
    if args.api == "tensor":
        from voiceconv.audio import save_audio

        save_audio(args.out, vc.convert(args.src, speaker, pitch=args.pitch), vc.sample_rate)
    else:
        vc.convert_to_file(args.src, speaker, args.out, pitch=args.pitch, overwrite=True)
    converted = time.perf_counter()
    cpu = _cpu_seconds() - cpu_start
    import soundfile as sf

    seconds = sf.info(args.out).duration
    print(json.dumps({
        "seconds": seconds, "source_seconds": sf.info(args.src).duration, "load_s": loaded - start,
        "embed_s": embedded - loaded, "convert_s": converted - embedded, "rtf": (converted - embedded) / seconds,
        "cpu_rtf": cpu / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vocoder": "neural" if vc.vocoder.is_neural else "griffin-lim",
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random", help="model directory, or 'random' (default)")
    parser.add_argument("--vocoder", default=None, help="vocoder directory or 'griffin-lim' (default: as "
                        "VoiceConverter.from_pretrained)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[10, 60, 600], help="seconds of input")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the target machine)")
    parser.add_argument("--pitch", default="auto", help="auto, off or semitones (default auto)")
    parser.add_argument("--api", choices=["file", "tensor"], default="file", help="convert_to_file (CLI) or "
                        "convert() returning a tensor")
    parser.add_argument("--source", default=None, help="a real recording to loop/cut instead of synthetic speech")
    parser.add_argument("--adapt-steps", type=int, default=None, help="speaker fitting steps of the embedding "
                        "(default: the converter's; 0: none), which the 'embed s' column times")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--targets", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, vocoder = args.model, args.vocoder
        if model == "random":
            model, vocoder_dir = random_model(tmp / "model")
            vocoder = vocoder or vocoder_dir
        targets = make_targets(tmp)
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch threads "
              f"{args.threads}, model {args.model}, pitch {args.pitch}, api {args.api}, adapt steps "
              f"{'default' if args.adapt_steps is None else args.adapt_steps}")
        print(f"{'seconds':>8} {'RTF':>7} {'CPU RTF':>8} {'convert s':>10} {'load s':>7} {'embed s':>8} "
              f"{'peak RSS MB':>12}  vocoder")
        for size in args.sizes:
            src = tmp / f"source_{size:g}.wav"
            make_source(src, size, args.source)
            command = [sys.executable, __file__, "--child", "--model", str(model), "--src", str(src), "--out",
                       str(tmp / f"out_{size:g}.wav"), "--threads", str(args.threads), "--pitch", args.pitch,
                       "--api", args.api, "--targets", *map(str, targets)]
            if vocoder:
                command += ["--vocoder", str(vocoder)]
            if args.adapt_steps is not None:
                command += ["--adapt-steps", str(args.adapt_steps)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"size {size:g} s failed:\n{done.stderr}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{r['seconds']:8.1f} {r['rtf']:7.4f} {r['cpu_rtf']:8.4f} {r['convert_s']:10.2f} {r['load_s']:7.2f} "
                  f"{r['embed_s']:8.2f} {r['peak_rss_mb']:12.0f}  {r['vocoder']}", flush=True)
            src.unlink()


if __name__ == "__main__":
    main()
