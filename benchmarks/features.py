"""Feature-extraction throughput of `voiceconv prepare`: audio hours per wall-clock minute, and peak memory.

Usage::

    python benchmarks/features.py                      # synthetic 16 kHz corpus, 1 and 2 workers
    python benchmarks/features.py --hours 0.5 --workers 1 2 4
    python benchmarks/features.py --data path/to/manifest.csv

Each worker count runs in a fresh Python process (so imports, pool start-up and peak memory are
those of a real run) on a fresh output directory (so nothing is reused). Without ``--data`` the
corpus is synthetic voices written as 16-bit WAV at 16 kHz into a temporary directory, so the
figures include decoding and resampling to the 22.05 kHz model rate, as a real VCTK/LibriTTS run
would. Peak memory is ``ru_maxrss`` of the measuring process (RUSAGE_SELF) and of its largest
worker (RUSAGE_CHILDREN).
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


def _synthetic_corpus(directory: Path, hours: float, rate: int, seed: int = 0) -> Path:
    """Speakers x utterances of 2-6 s synthetic speech; returns the manifest path."""
    import numpy as np
    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import synthetic_voice

    from voiceconv.training.prepare import ManifestRow, write_manifest

    rng = np.random.default_rng(seed)
    rows, total = [], 0.0
    while total < hours * 3600:
        speaker = len(rows) % 10
        seconds = float(rng.uniform(2.0, 6.0))
        f0 = 90 + 15 * speaker
        formants = (600 + 40 * speaker, 1100 + 60 * speaker, 2500 + 50 * speaker)
        audio = synthetic_voice(f0, formants, seconds, rate, seed=len(rows))
        path = directory / f"spk{speaker}" / f"utt{len(rows):05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, rate, subtype="PCM_16")
        rows.append(ManifestRow(str(path.relative_to(directory)), f"spk{speaker}"))
        total += seconds
    manifest = directory / "manifest.csv"
    write_manifest(manifest, rows)
    return manifest


def _measure(manifest: str, out: str, workers: int, shard_size: int) -> None:
    """Child process: run prepare once and print one JSON line of figures."""
    start = time.perf_counter()
    from voiceconv.training.prepare import prepare  # imports count: a real run pays them too

    imported = time.perf_counter()
    summary = prepare(manifest, out, workers=workers, progress=False, shard_size=shard_size)
    wall = time.perf_counter() - start
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    figures = {"wall_s": wall, "import_s": imported - start, "hours": summary.hours,
               "utterances": summary.utterances, "skipped": len(summary.skipped),
               "self_rss_mb": self_rss / 1024, "child_rss_mb": child_rss / 1024}
    print(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="manifest CSV of a real corpus (default: a synthetic one)")
    parser.add_argument("--hours", type=float, default=0.25, help="synthetic corpus size in hours (default 0.25)")
    parser.add_argument("--rate", type=int, default=16000, help="synthetic corpus sample rate (default 16000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--shard-size", type=int, default=16, help="utterances per shard (default 16)")
    parser.add_argument("--_measure", nargs=4, metavar=("MANIFEST", "OUT", "WORKERS", "SHARD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        manifest, out, workers, shard = args._measure
        _measure(manifest, out, int(workers), int(shard))
        return 0

    with tempfile.TemporaryDirectory(prefix="voiceconv-bench-") as temp:
        temp = Path(temp)
        if args.data:
            manifest = Path(args.data).resolve()
            source = f"manifest {manifest}"
        else:
            started = time.perf_counter()
            manifest = _synthetic_corpus(temp / "corpus", args.hours, args.rate)
            source = f"synthetic {args.hours} h at {args.rate} Hz (written in {time.perf_counter() - started:.0f} s)"
        print(f"corpus: {source}")
        print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs available, "
              f"load average {os.getloadavg()[0]:.1f} at start; python {platform.python_version()}")
        print(f"{'workers':>7}  {'utts':>6}  {'audio h':>7}  {'wall s':>7}  {'(imports s)':>11}  "
              f"{'h audio / min':>13}  {'x realtime':>10}  {'peak RSS MB (main / worker)':>28}")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for workers in args.workers:
            out = temp / f"prepared_w{workers}"
            result = subprocess.run(
                [sys.executable, __file__, "--_measure", str(manifest), str(out), str(workers), str(args.shard_size)],
                capture_output=True, text=True, env=env, check=False,
            )
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return result.returncode
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            per_minute = figures["hours"] / (figures["wall_s"] / 60)
            realtime = figures["hours"] * 3600 / figures["wall_s"]
            worker_rss = f"{figures['child_rss_mb']:.0f}" if workers > 1 else "-"
            print(f"{workers:>7}  {figures['utterances']:>6}  {figures['hours']:>7.3f}  {figures['wall_s']:>7.1f}  "
                  f"{figures['import_s']:>11.1f}  {per_minute:>13.2f}  {realtime:>10.0f}  "
                  f"{figures['self_rss_mb']:>20.0f} / {worker_rss}")
        print(f"load average {os.getloadavg()[0]:.1f} at end (other jobs share these CPUs: figures are a floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
