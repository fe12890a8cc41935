"""Run every benchmark in benchmarks/ and write benchmarks/RESULTS.md with the machine description.

Usage::

    python benchmarks/run_all.py                  # the standard profile, about 15-19 minutes on 2 cores
    python benchmarks/run_all.py --quick          # smoke profile (a few minutes): every script runs, figures rough
    python benchmarks/run_all.py --only vocoder_speed convert_speed
    python benchmarks/run_all.py --model exp/vc --vocoder exp/vocoder --pairs eval_pairs.csv --data prepared/

Each script runs as its own subprocess (``sys.executable``, the repository root as working
directory) with the arguments registered below for the chosen profile, under a time limit. The
limit is the script's budget, cut further so the whole run ends within ``--budget`` seconds
(default 1140 s = 19 min); a script that runs out is stopped (its whole process group, since
several scripts start children) and RESULTS.md keeps what it printed, marked "timed out". The
figures are what each script prints; every script reports medians over its own repeats.

Scripts that need a trained model or data (speaker_similarity, pitch_options, vocoder_quality)
run only when ``--model``/``--pairs``/``--data``/``--vocoder`` supply them, and are listed as
skipped otherwise. A script in benchmarks/ that is not registered here runs with no arguments.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_BUDGET_S = 1140.0  # 19 min: the 20-minute limit, less a minute for start-up and writing
UNREGISTERED_BUDGET_S = 120.0  # a new script nobody registered yet gets two minutes
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL of a script that ran out of time


@dataclass
class Benchmark:
    """How run_all calls one script: arguments per profile, a time budget, and inputs it cannot do without."""

    script: str
    args: list[str]  # standard profile
    quick_args: list[str]  # --quick profile
    budget_s: float  # standard-profile limit (the quick profile gets a third, at least 60 s)
    needs: tuple[str, ...] = ()  # run_all options that must be given: model, vocoder, pairs, data
    passes: tuple[str, ...] = ()  # run_all options forwarded when given (same flag name)
    notes: str = ""


# Budgets: about 1.5x the longest each script took on the 2-core development machine while it was shared
# with a training job and other work (load average 4-9); their sum (1140 s) is DEFAULT_BUDGET_S.
BENCHMARKS = [
    Benchmark("features.py", ["--hours", "0.05", "--workers", "1", "2"], ["--hours", "0.01", "--workers", "1"],
              budget_s=120, notes="prepare throughput: synthetic 16 kHz corpus"),
    Benchmark("train_speed.py",
              ["--device", "cpu", "--threads", "2", "--warmup", "1", "--steps", "3", "--repeats", "3"],
              ["--device", "cpu", "--threads", "2", "--warmup", "0", "--steps", "1", "--repeats", "1",
               "--batch-size", "4"],
              budget_s=150, notes="VC training steps/s, default config, batch 32 x 128 frames"),
    # The script's defaults (60 s inputs, 1 and 2 threads, a 10-minute memory check) take 5-10 min on a shared machine.
    Benchmark("vocoder_speed.py",
              ["--threads", "2", "--durations", "10", "20", "--repeats", "3", "--budget", "10", "--long-minutes", "1"],
              ["--quick"], budget_s=330, notes="every generator, 10 s and 20 s, 2 threads, peak memory"),
    Benchmark("convert_speed.py", ["--sizes", "10", "60"], ["--sizes", "5"], budget_s=150, passes=("model", "vocoder"),
              notes="end-to-end conversion RTF and peak memory; random-init full-size model unless --model"),
    Benchmark("streaming_latency.py", ["--seconds", "8", "--block-frames", "4", "8"],
              ["--seconds", "3", "--block-frames", "8"], budget_s=240, passes=("model", "vocoder"),
              notes="streaming latency and distance to offline conversion"),
    Benchmark("demo_load.py", ["--requests", "4", "--seconds", "10"], ["--requests", "2", "--seconds", "3"],
              budget_s=150, passes=("model", "vocoder"), notes="concurrent web-demo conversions and server memory"),
    Benchmark("speaker_similarity.py", [], [], budget_s=300, needs=("model", "pairs"), passes=("vocoder",),
              notes="model's own speaker-vector cosine: source vs converted with 1 and 3 refs"),
    Benchmark("pitch_options.py", [], [], budget_s=300, needs=("model", "pairs"), passes=("vocoder",),
              notes="pitch option vs similarity and F0 gap"),
    Benchmark("vocoder_quality.py", [], [], budget_s=300, needs=("data", "vocoder"),
              notes="neural vocoder vs Griffin-Lim resynthesis distance"),
    Benchmark("vocoder_phase_init.py", [], ["--every", "10", "--iterations", "0", "8"], budget_s=300,
              needs=("data", "vocoder"), notes="phase start (network, integrated, zero) vs refinement iterations"),
]
# Run by hand, not here: they need inputs run_all does not pass (an evaluation folder, a speech manifest)
# or take longer than a report run should (robustness: 10-20 min; vocoder training steps: minutes).
SKIP = {"run_all.py", "demo_similarity.py", "input_check.py", "robustness.py", "similarity_ceiling.py",
        "vocoder_train_speed.py"}


@dataclass
class Outcome:
    name: str
    command: list[str]
    status: str  # ok / failed (exit N) / timed out after N s / skipped: reason
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    notes: str = ""


def machine_description() -> list[tuple[str, str]]:
    """CPU model, cores, memory, OS, Python, torch and the repository commit, as (label, value) rows."""
    rows = []
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rows.append(("CPU", f"{cpu} ({platform.machine()})"))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows.append(("cores", f"{os.cpu_count()} logical, {usable} usable by this process"))
    try:
        total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                        if line.startswith("MemTotal"))
        rows.append(("memory", f"{total_kb / 2**20:.1f} GiB"))
    except (OSError, StopIteration):
        pass
    if hasattr(os, "getloadavg"):
        rows.append(("load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in os.getloadavg())))
    threads_env = {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ}
    if threads_env:
        rows.append(("thread variables", ", ".join(f"{name}={value}" for name, value in threads_env.items())))
    rows.append(("OS", platform.platform()))
    rows.append(("Python", platform.python_version()))
    try:
        import numpy
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        rows.append(("torch", f"{torch.__version__} (threads {torch.get_num_threads()}, CUDA device: {gpu})"))
        rows.append(("numpy", numpy.__version__))
    except ImportError as error:
        rows.append(("torch", f"not importable ({error})"))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        rows.append(("voiceconv commit", f"{commit}{' (with uncommitted changes)' if dirty else ''}"))
    except (OSError, subprocess.SubprocessError):
        pass
    rows.append(("date", datetime.datetime.now().astimezone().isoformat(timespec="seconds")))
    return rows


def run_script(command: list[str], timeout: float) -> tuple[str, float, str, str]:
    """Run ``command`` in its own process group; returns ``(status, seconds, stdout, stderr)``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # so a killed script still hands over what it printed
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        status = "ok" if process.returncode == 0 else f"failed (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        # The group includes the children some scripts start (measurement subprocesses, a demo server).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                stdout, stderr = process.communicate(timeout=KILL_GRACE_S)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            stdout, stderr = "", ""
        status = f"timed out after {timeout:.0f} s"
    return status, time.perf_counter() - start, stdout or "", stderr or ""


def plan(args) -> list[tuple[Benchmark, list[str] | None, str]]:
    """Every script to report: ``(benchmark, command or None, reason when skipped)``."""
    registered = {benchmark.script: benchmark for benchmark in BENCHMARKS}
    present = sorted(path.name for path in HERE.glob("*.py") if path.name not in SKIP and not path.name.startswith("_"))
    order = [b.script for b in BENCHMARKS if b.script in present] + [name for name in present if name not in registered]
    chosen = []
    for name in order:
        if args.only and Path(name).stem not in args.only and name not in args.only:
            continue
        benchmark = registered.get(name) or Benchmark(name, [], [], UNREGISTERED_BUDGET_S,
                                                      notes="not registered in run_all.py: run without arguments")
        missing = [need for need in benchmark.needs if not getattr(args, need)]
        if missing:
            chosen.append((benchmark, None, "skipped: needs " + ", ".join(f"--{need}" for need in missing)))
            continue
        command = [sys.executable, str(HERE / name), *(benchmark.quick_args if args.quick else benchmark.args)]
        for option in (*benchmark.needs, *benchmark.passes):
            if getattr(args, option):
                command += [f"--{option}", str(getattr(args, option))]
        chosen.append((benchmark, command, ""))
    missing_registered = [b.script for b in BENCHMARKS if b.script not in present]
    for name in missing_registered:
        if not args.only or Path(name).stem in args.only:
            chosen.append((registered[name], None, "skipped: script not in benchmarks/"))
    return chosen


def _fence(text: str) -> list[str]:
    text = text.rstrip("\n")
    return ["```text", text if text else "(no output)", "```"]


def write_results(path: Path, outcomes: list[Outcome], machine: list[tuple[str, str]], argv: list[str],
                  total_s: float) -> None:
    lines = [
        "# voiceconv benchmark results",
        "",
        f"Written by `python benchmarks/run_all.py{' ' + shlex.join(argv) if argv else ''}` in {total_s / 60:.1f} "
        "minutes. Every figure is what the script printed: medians over its own repeats. On a machine shared "
        "with other jobs wall-clock times are inflated (see the load average); scripts that report CPU time "
        "show what the work costs on idle cores.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {label} | {value} |" for label, value in machine],
        "",
        "## Summary",
        "",
        "| benchmark | status | seconds | what it measures |",
        "|---|---|---|---|",
    ]
    for outcome in outcomes:
        seconds = f"{outcome.seconds:.0f}" if outcome.command else ""
        # GitHub's heading anchors keep underscores: "## train_speed" is #train_speed.
        lines.append(f"| [{outcome.name}](#{Path(outcome.name).stem}) | {outcome.status} | "
                     f"{seconds} | {outcome.notes} |")
    for outcome in outcomes:
        lines += ["", f"## {Path(outcome.name).stem}", ""]
        if not outcome.command:
            lines.append(f"{outcome.status}.")
            continue
        relative = [str(Path(part).relative_to(ROOT)) if part.startswith(str(ROOT)) else part
                    for part in outcome.command[1:]]
        lines += [f"`python {shlex.join(relative)}`: {outcome.status} in {outcome.seconds:.0f} s.", ""]
        lines += _fence(outcome.stdout)
        if outcome.status != "ok" and outcome.stderr.strip():
            tail = "\n".join(outcome.stderr.rstrip().splitlines()[-25:])
            lines += ["", "<details><summary>last lines of stderr</summary>", "", *_fence(tail), "", "</details>"]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, path)  # a reader never sees a half-written file


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke profile: small sizes, one repeat")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (e.g. convert_speed)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for the whole run (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="results file (default "
                        "benchmarks/RESULTS.md)")
    parser.add_argument("--model", help="VC model directory, passed to the scripts that take one")
    parser.add_argument("--vocoder", help="vocoder directory, passed to the scripts that take one")
    parser.add_argument("--pairs", help="evaluation pairs CSV (source,target) for speaker_similarity/pitch_options")
    parser.add_argument("--data", help="prepared directory (voiceconv prepare) for vocoder_quality")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    deadline = start + args.budget
    machine = machine_description()
    outcomes = []
    for benchmark, command, reason in plan(args):
        if command is None:
            outcomes.append(Outcome(benchmark.script, [], reason, notes=benchmark.notes))
            print(f"{benchmark.script}: {reason}", flush=True)
            continue
        budget = max(60.0, benchmark.budget_s / 3) if args.quick else benchmark.budget_s
        timeout = min(budget, deadline - time.perf_counter())
        if timeout < 10:
            outcomes.append(Outcome(benchmark.script, [], f"skipped: the {args.budget:.0f} s budget was used up",
                                    notes=benchmark.notes))
            print(f"{benchmark.script}: skipped (budget used up)", flush=True)
            continue
        print(f"{benchmark.script}: running (limit {timeout:.0f} s) ...", flush=True)
        status, seconds, stdout, stderr = run_script(command, timeout)
        print(f"{benchmark.script}: {status} in {seconds:.0f} s", flush=True)
        outcomes.append(Outcome(benchmark.script, command, status, seconds, stdout, stderr, benchmark.notes))
        # Written after every script, so an interrupted run still leaves the results so far.
        write_results(args.out, outcomes, machine, argv, time.perf_counter() - start)
    total = time.perf_counter() - start
    write_results(args.out, outcomes, machine, argv, total)
    print(f"wrote {args.out} ({total / 60:.1f} min)")
    ran = [outcome for outcome in outcomes if outcome.command]
    return 0 if ran and all(outcome.status == "ok" for outcome in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
