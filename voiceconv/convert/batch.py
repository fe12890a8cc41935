"""Batch conversion from a CSV of (source, target) pairs: resumable, shardable, one bad row fails alone.

``PAIRS.csv`` has the columns ``source``, ``target`` and optionally ``output``:

- ``target`` is one or several reference clips separated by ``;`` or ``|``, or a ``.spk`` file;
- ``output`` is a file name inside ``--out-dir`` (no absolute paths, no ``..``, no symlink that
  leads outside); without it, row ``i`` writes ``{i:05d}_{source stem}.wav``;
- relative paths are resolved against the CSV's folder.

Guarantees:

- **Resumable.** Outputs are written to a temporary name and renamed, so an output that exists
  is complete. A re-run checks every existing output (decodes, right rate, right length) and skips
  it; a batch killed with SIGKILL and run again ends with every output present and none converted
  twice.
- **Auditable.** Every finished row is appended (and fsync'ed) to ``<status>.journal.csv`` with the
  run's id, so the journal proves which run converted what; the per-run report ``<status>.csv``
  lists each row of the shard as ``ok``, ``skipped`` or ``failed`` with the reason and timings.
- **Isolated failures.** A missing, corrupt, silent or too-short file, or an output path that
  escapes the directory, fails that row only; the batch goes on and exits non-zero at the end.
- **Shardable.** ``--shard K/N``, else ``RANK``/``WORLD_SIZE`` (torchrun), else
  ``SLURM_PROCID``/``SLURM_NTASKS``: row ``i`` belongs to shard ``i % N``, so shards neither overlap
  nor leave gaps. Each shard keeps its own status files.
- **Each speaker embedded once** per run, before any conversion that needs it.
- ``--jobs N`` converts in N worker processes (each with ``cpu_count / N`` torch threads).
"""

from __future__ import annotations

import csv
import fcntl
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from voiceconv.convert.batch_rows import (
    BatchError,
    Row,
    expected_samples,
    output_is_complete,
    read_pairs,
    remove_stale_temporaries,
)
from voiceconv.convert.source import check_source
from voiceconv.convert.speaker import SPEAKER_SUFFIX
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

REPORT_FIELDS = ["row", "source", "target", "output", "status", "reason", "audio_seconds", "seconds", "warning"]
JOURNAL_FIELDS = ["time", "run", "row", "status", "output", "audio_seconds", "seconds", "reason"]


@dataclass
class Result:
    row: int
    status: str  # "ok", "skipped" or "failed"
    reason: str = ""
    audio_seconds: float = 0.0
    seconds: float = 0.0
    warning: str = ""  # the input check's warning about the source (voiceconv.convert.input_check), if any


@dataclass
class Summary:
    results: list[Result]
    report_path: Path
    journal_path: Path
    shard: tuple[int, int]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> int:
        return self.count("failed")


# ---- workers ------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(model, vocoder, device, threads: int, parent: int, adapt_steps: int | None = None) -> None:
    import torch

    from voiceconv.convert.converter import VoiceConverter

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    _WORKER["vc"] = VoiceConverter.from_pretrained(model, vocoder=vocoder, device=device, adapt_steps=adapt_steps)
    _WORKER["parent"] = parent


def _parent_alive() -> bool:
    # A worker orphaned by a killed batch must not write outputs that a re-run also writes.
    parent = _WORKER.get("parent")
    return parent is None or os.getppid() == parent


def _embed(key: tuple[str, ...], vc=None):
    """``(key, Speaker or None, error)``: a .spk file is loaded and checked, references are embedded."""
    from voiceconv.convert.speaker import Speaker

    vc = vc or _WORKER["vc"]
    try:
        if len(key) == 1 and key[0].lower().endswith(SPEAKER_SUFFIX):
            speaker = Speaker.load(key[0])
            speaker.check_model(vc.model_sha256, vc.model.speaker_dim, key[0])
        else:
            speaker = vc.embed_speaker(list(key))
        return key, speaker, None
    except Exception as error:  # one bad target fails its rows only
        return key, None, _one_line(error)


def _convert(row: Row, speaker, pitch, overwrite: bool, vc=None) -> Result:
    vc = vc or _WORKER["vc"]
    start = time.perf_counter()
    if not _parent_alive():
        return Result(row.index, "failed", "batch process was killed before this row started")
    try:
        path = vc.convert_to_file(row.source_path, speaker, row.output_path, pitch=pitch, overwrite=overwrite)
        frames = sf.info(str(path)).frames
        report = vc.check_input(row.source_path)
        warning = f"source: {report.warning}" if report is not None and report.warning else ""
        return Result(row.index, "ok", "", frames / vc.sample_rate, time.perf_counter() - start, warning)
    except Exception as error:  # a bad row fails alone; the batch goes on
        return Result(row.index, "failed", _one_line(error), 0.0, time.perf_counter() - start)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, (VoiceconvError, OSError)) else f"{type(error).__name__}: {text}"


# ---- the run ------------------------------------------------------------------------------------


class _Journal:
    """Append-only CSV of finished rows, one line per row, flushed and fsync'ed; locked per shard."""

    def __init__(self, path: Path, run_id: str):
        self.path, self.run_id = path, run_id
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self.handle = open(path, "a", newline="", encoding="utf-8")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise BatchError(f"{path} is locked: another batch run is working on this shard; wait for it or "
                             "stop it first") from None
        self.writer = csv.writer(self.handle)
        if new:
            self.writer.writerow(JOURNAL_FIELDS)
            self._sync()

    def write(self, result: Result, output: Path | None) -> None:
        self.writer.writerow([time.strftime("%Y-%m-%dT%H:%M:%S"), self.run_id, result.row, result.status,
                              output or "", f"{result.audio_seconds:.3f}", f"{result.seconds:.3f}", result.reason])
        self._sync()

    def _sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()  # also releases the lock


def status_paths(out_dir: Path, status: str | os.PathLike | None, shard: tuple[int, int]) -> tuple[Path, Path]:
    """(report, journal) paths; each shard of a sharded run gets its own pair."""
    k, n = shard
    report = Path(status) if status else out_dir / "batch_status.csv"
    if n > 1:
        report = report.with_name(f"{report.stem}.shard{k}of{n}{report.suffix or '.csv'}")
    return report, report.with_name(f"{report.stem}.journal.csv")


def run_batch(pairs: str | os.PathLike, out_dir: str | os.PathLike, *, model=None, vocoder=None, device=None,
              adapt_steps: int | None = None, pitch=None, jobs: int = 1, shard: tuple[int, int] = (0, 1),
              status: str | os.PathLike | None = None,
              overwrite: bool = False, converter=None, progress: bool = True,
              report: Callable[[str], None] | None = None) -> Summary:
    """Convert this shard's rows of ``pairs`` into ``out_dir``; see the module docstring.

    ``model``/``vocoder``/``device``/``adapt_steps`` are what :meth:`VoiceConverter.from_pretrained` takes (workers
    load their own copy); ``converter`` is an already loaded one for ``jobs == 1``. ``report`` is
    called with one line per failed row.
    """
    from tqdm import tqdm

    from voiceconv.convert.pitch import parse_pitch

    pitch = parse_pitch(pitch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [row for row in read_pairs(pairs, out_dir) if row.index % shard[1] == shard[0]]
    report_path, journal_path = status_paths(out_dir, status, shard)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    journal = _Journal(journal_path, run_id)
    report = report or (lambda line: log.error("%s", line))
    results: dict[int, Result] = {}

    def finish(row: Row, result: Result) -> None:
        results[row.index] = result
        journal.write(result, row.output_path if result.status != "failed" else None)
        if result.status == "failed":
            report(f"row {row.index} ({row.source or '?'}): failed: {result.reason}")

    pool = None
    try:
        if converter is None and jobs <= 1:
            from voiceconv.convert.converter import VoiceConverter

            converter = VoiceConverter.from_pretrained(model, vocoder=vocoder, device=device,
                                                       adapt_steps=adapt_steps)
        sample_rate = converter.sample_rate if converter is not None else _model_rate(model)
        remove_stale_temporaries(rows)
        todo = []
        for row in rows:
            if row.error:
                finish(row, Result(row.index, "failed", row.error))
            elif not overwrite and output_is_complete(row, sample_rate):
                finish(row, Result(row.index, "skipped", "output already complete",
                                   (expected_samples(row.source_path, sample_rate) or 0) / sample_rate))
            elif not overwrite and row.output_path.exists():
                finish(row, Result(row.index, "failed", f"{row.output_path} exists but is not a complete conversion "
                                   "of this source; delete it or pass --overwrite"))
            else:
                todo.append(row)
        bar = tqdm(total=len(rows), initial=len(rows) - len(todo), unit="row", disable=not progress,
                   desc=f"shard {shard[0]}/{shard[1]}" if shard[1] > 1 else "batch")
        if jobs > 1 and todo:
            import multiprocessing

            threads = max(1, (os.cpu_count() or 1) // jobs)
            pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker,
                                       initargs=(model, vocoder, device, threads, os.getpid(), adapt_steps))
            submit = pool.submit
        else:
            def submit(fn, *args):
                return _Immediate(fn(*args, vc=converter))

        # Sources are checked first, so that no target is embedded for rows that cannot be converted.
        checked = []
        for row in todo:
            try:
                check_source(row.source_path, sample_rate)
                checked.append(row)
            except Exception as error:  # a bad source fails its row alone
                finish(row, Result(row.index, "failed", _one_line(error)))
                bar.update(1)
        todo = checked
        # Each distinct target is embedded once, before the rows that need it.
        keys = list(dict.fromkeys(row.speaker_key for row in todo))
        speakers = {}
        for future in [submit(_embed, key) for key in keys]:
            key, speaker, error = future.result()
            speakers[key] = (speaker, error)
        pending = {}
        for row in todo:
            speaker, error = speakers[row.speaker_key]
            if speaker is None:
                finish(row, Result(row.index, "failed", f"target: {error}"))
                bar.update(1)
                continue
            future = submit(_convert, row, speaker, pitch, overwrite)
            if isinstance(future, _Immediate):
                finish(row, future.result())
                bar.update(1)
            else:
                pending[future] = row
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                finish(pending.pop(future), future.result())
                bar.update(1)
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        journal.close()
    ordered = [results[row.index] for row in rows]
    _write_report(report_path, rows, ordered)
    return Summary(ordered, report_path, journal_path, shard)


class _Immediate:
    """A finished 'future' for the in-process path."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _model_rate(model) -> int:
    from voiceconv.checkpoint import read_config
    from voiceconv.pretrained import default_vc_dir

    directory = Path(model) if model is not None else default_vc_dir()
    if not (directory / "config.json").is_file() and (directory / "vc" / "config.json").is_file():
        directory = directory / "vc"
    return int(read_config(directory, "vc_model")["config"]["mel"]["sample_rate"])


def _write_report(path: Path, rows: list[Row], results: list[Result]) -> None:
    import io

    from voiceconv.checkpoint import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REPORT_FIELDS)
    for row, result in zip(rows, results):
        writer.writerow([row.index, row.source, row.target, row.output_path or row.output_name, result.status,
                         result.reason, f"{result.audio_seconds:.3f}", f"{result.seconds:.3f}", result.warning])
    atomic_write_text(path, buffer.getvalue())
