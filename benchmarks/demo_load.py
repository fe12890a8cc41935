"""Load test of the web demo: concurrent conversions through gradio_client, with the server's memory.

    python benchmarks/demo_load.py                      # 2 rounds of 8 concurrent 10 s clips (~1-2 min)
    python benchmarks/demo_load.py --model exp/vc --vocoder exp/vocoder --requests 16 --seconds 20

Starts ``voiceconv demo`` in a subprocess (exactly what a user runs), waits for it, sends one warm-up
conversion, then ``--rounds`` rounds of ``--requests`` conversions at once, each from its own client
(its own session), and prints:

- latency of each request (submit -> result), the total wall time, and throughput;
- whether every request came back, with audio of the source's duration (none lost, none wrong);
- the server's resident memory (RSS of the server process): idle after start, after the warm-up
  ("before"), the peak during each round, and "after" each round (a few seconds after its last
  result). "after" should be near "before", and round 2 must not end higher than round 1: a leak
  shows as growth per request.

Without ``--model``, it uses the shipped default model when installed, else it saves random-init
models of the full default size (conf/adain_vc.yaml and the default iSTFT vocoder) in a temporary
folder: speed and memory do not depend on the weights. Exit status 1 if a request failed or came
back with the wrong duration, or the memory did not come back within the tolerances.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler(threading.Thread):
    """Samples the server's RSS every ``interval`` seconds; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self._done = pid, interval, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            time.sleep(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


def synthetic_speech(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal: enough for the pipeline's speed and memory."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 30) if k * 120 < rate / 2)
    envelope = 0.55 - 0.45 * np.cos(2 * np.pi * 4 * t)
    audio = voice * envelope + 0.003 * rng.standard_normal(t.size)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def random_models(directory: Path) -> Path:
    """Full-size random-init VC model + vocoder as a ``vc/`` + ``vocoder/`` bundle."""
    import torch

    import voiceconv
    from voiceconv.config import from_dict, load_yaml
    from voiceconv.models import VCConfig, VCModel
    from voiceconv.vocoder.model import Vocoder, VocoderConfig

    torch.manual_seed(0)
    config = from_dict(VCConfig, load_yaml(Path(voiceconv.__file__).parent / "conf" / "adain_vc.yaml")["model"])
    VCModel(config).save_pretrained(directory / "vc")
    Vocoder(VocoderConfig()).save_pretrained(directory / "vocoder")
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="VC model directory (default: shipped, else random-init full size)")
    parser.add_argument("--vocoder", help="vocoder directory (default: as 'voiceconv demo')")
    parser.add_argument("--requests", type=int, default=8, help="concurrent conversions (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="source clip length (default 10)")
    parser.add_argument("--source", help="source audio file instead of the synthetic clip")
    parser.add_argument("--concurrency", type=int, default=1, help="server's --concurrency (default 1)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait before the 'after' RSS")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of concurrent requests (default 2)")
    parser.add_argument("--rss-tolerance-mb", type=float, default=100.0,
                        help="allowed growth of the final RSS over 'before' (default 100 MB)")
    parser.add_argument("--drift-tolerance-mb", type=float, default=30.0,
                        help="allowed growth of the final RSS over the RSS after round 1 (default 30 MB)")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    from voiceconv.pretrained import default_vc_dir

    work = Path(tempfile.mkdtemp(prefix="demo_load_"))
    model = args.model
    if model is None:
        if (default_vc_dir() / "model.safetensors").is_file():
            model_note = "shipped default model"
        else:
            model = str(random_models(work / "random"))
            model_note = "random-init full-size model (conf/adain_vc.yaml + default iSTFT vocoder); no shipped model"
    else:
        model_note = model
    source = Path(args.source) if args.source else work / "source.wav"
    if not args.source:
        sf.write(source, synthetic_speech(args.seconds), 16000, subtype="PCM_16")
    source_seconds = sf.info(str(source)).duration

    port = free_port()
    command = [sys.executable, "-m", "voiceconv.cli", "demo", "--port", str(port),
               "--concurrency", str(args.concurrency), "--max-seconds", str(max(30.0, source_seconds + 1))]
    if model:
        command += ["--model", model]
    if args.vocoder:
        command += ["--vocoder", args.vocoder]
    env = dict(os.environ, GRADIO_TEMP_DIR=str(work / "gradio_tmp"), GRADIO_ANALYTICS_ENABLED="False")
    log_path = work / "server.log"
    started = time.perf_counter()
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        client = None
        while client is None:
            if server.poll() is not None:
                raise SystemExit("the demo server exited during start-up (its log is printed above)")
            try:
                client = Client(url, verbose=False)
            except Exception:
                time.sleep(0.5)
        start_seconds = time.perf_counter() - started
        rss_idle = rss_mb(server.pid)

        def convert(_index: int) -> tuple[float, float]:
            begun = time.perf_counter()
            own = Client(url, verbose=False)  # its own session, like a separate visitor
            result = own.predict(handle_file(str(source)), "gallery", "librispeech_196", "auto", 0,
                                 None, None, api_name="/convert")
            latency = time.perf_counter() - begun
            return latency, sf.info(result[0]).duration

        warm_latency, _ = convert(-1)
        time.sleep(1.0)
        rss_before = rss_mb(server.pid)

        rounds = []  # per round: (outcomes, wall seconds, peak RSS, RSS after settling)
        for _ in range(args.rounds):
            sampler = RssSampler(server.pid)
            sampler.start()
            load_started = time.perf_counter()
            outcomes = []
            with ThreadPoolExecutor(max_workers=args.requests) as pool:
                futures = [pool.submit(convert, i) for i in range(args.requests)]
                for future in futures:
                    try:
                        outcomes.append(future.result())
                    except Exception as error:  # a lost or failed request is a result of the benchmark
                        outcomes.append(error)
            total = time.perf_counter() - load_started
            time.sleep(args.settle)
            rounds.append((outcomes, total, max(sampler.stop(), rss_before), rss_mb(server.pid)))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if server.returncode not in (0, -15):
            print(log_path.read_text())
        shutil.rmtree(work, ignore_errors=True)  # the random models and Gradio's uploads/results

    print(f"model: {model_note}")
    print(f"server: voiceconv demo --concurrency {args.concurrency}; ready in {start_seconds:.1f} s "
          f"(imports + model load); {os.cpu_count()} CPU cores")
    print(f"source clip: {source_seconds:.1f} s; warm-up request {warm_latency:.2f} s")
    print(f"server RSS (MB): idle {rss_idle:.0f}, before {rss_before:.0f} (after the warm-up request)")
    passed = True
    for number, (outcomes, total, rss_peak, rss_after) in enumerate(rounds, 1):
        failures = [o for o in outcomes if isinstance(o, Exception)]
        ok = [o for o in outcomes if not isinstance(o, Exception)]
        wrong_length = [d for _, d in ok if abs(d - source_seconds) > 0.05]
        latencies = sorted(latency for latency, _ in ok)
        print(f"round {number}: {args.requests} concurrent requests: {len(ok)} succeeded, {len(failures)} failed, "
              f"{len(wrong_length)} with the wrong duration")
        for error in failures:
            print(f"  failed: {type(error).__name__}: {error}")
        if latencies:
            print("  latency per request (s, sorted): " + ", ".join(f"{x:.2f}" for x in latencies))
            print(f"  latency median {statistics.median(latencies):.2f} s, max {latencies[-1]:.2f} s; "
                  f"total {total:.2f} s for {args.requests * source_seconds:.0f} s of audio "
                  f"({args.requests * source_seconds / total:.2f} s of audio per wall second)")
        print(f"  server RSS (MB): peak {rss_peak:.0f}, after {rss_after:.0f} "
              f"({rss_after - rss_before:+.0f} vs before, {args.settle:g} s after the last result)")
        passed &= not failures and not wrong_length
    growth = rounds[-1][3] - rss_before
    drift = rounds[-1][3] - rounds[0][3]
    print(f"RSS after the last round: {growth:+.0f} MB vs before (allowed {args.rss_tolerance_mb:g}); "
          f"{drift:+.0f} MB vs after round 1 (allowed {args.drift_tolerance_mb:g}: growth per round would be a leak)")
    passed &= growth <= args.rss_tolerance_mb and drift <= args.drift_tolerance_mb
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
