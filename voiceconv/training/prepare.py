"""Manifests and feature extraction: ``voiceconv prepare`` turns a manifest into the prepared directory.

Manifest: a CSV with a header and the columns ``path,speaker`` plus optional ``transcript``
(extra columns are ignored). Relative paths are relative to the manifest's folder.

Prepared directory (written by :func:`prepare`, read by :class:`voiceconv.training.data.PreparedCorpus`)::

    meta.json       mel config, counts, skipped files
    index.csv       utterance_id, speaker, path, transcript, frame_offset, n_frames, sample_offset, n_samples
    mels.npy        (total_frames, n_mels) float16, memory-mapped for cheap random reads
    audio.npy       (total_samples,) int16 at the mel rate (for vocoder training), memory-mapped
    skipped.csv     path, reason for every file that could not be used
    shards/         per-chunk results; a re-run reuses finished shards, so an interrupted run resumes
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voiceconv.audio import load_audio, trim_silence
from voiceconv.checkpoint import atomic_write_text
from voiceconv.errors import VoiceconvError
from voiceconv.features import MelConfig, MelSpectrogram

logger = logging.getLogger(__name__)

SHARD_SIZE = 64  # utterances per shard: the unit of resumption
SERIAL_BELOW = 256  # with workers=None, fewer utterances than this are computed in-process (no pool start-up)


@dataclass
class ManifestRow:
    path: str
    speaker: str
    transcript: str = ""


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest CSV. Relative audio paths resolve against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise VoiceconvError(f"{path}: manifest not found")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = {"path", "speaker"} - set(columns)
        if missing:
            raise VoiceconvError(
                f"{path}: manifest needs the columns path,speaker[,transcript]; missing {sorted(missing)} "
                f"(found {columns})"
            )
        rows = []
        for number, record in enumerate(reader, start=2):
            if not record.get("path") or not record.get("speaker"):
                raise VoiceconvError(f"{path}:{number}: empty path or speaker")
            audio_path = Path(record["path"])
            if not audio_path.is_absolute():
                audio_path = path.parent / audio_path
            rows.append(ManifestRow(str(audio_path), record["speaker"], record.get("transcript") or ""))
    if not rows:
        raise VoiceconvError(f"{path}: manifest has no rows")
    return rows


def write_manifest(path: str | Path, rows: list[ManifestRow]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker", "transcript"])
        for row in rows:
            writer.writerow([row.path, row.speaker, row.transcript])


def _utterance_id(row: ManifestRow, number: int) -> str:
    return f"{row.speaker}/{number:06d}_{Path(row.path).stem}"


def _process_shard(args) -> str:
    """Worker: compute mels (and int16 audio) for one shard and write it atomically."""
    shard_path, rows, start, mel_dict, trim = args
    torch.set_num_threads(1)  # one thread per worker: the pool provides the parallelism
    config = MelConfig.from_dict(mel_dict)
    mel_fn = MelSpectrogram(config)
    mels, audios, records, skipped = [], [], [], []
    for offset, row in enumerate(rows):
        number = start + offset
        try:
            audio = load_audio(row.path, config.sample_rate)
            if trim:
                audio = trim_silence(audio, config.sample_rate)
            # Whole frames only, so that audio sample k * hop starts mel frame k exactly.
            audio = audio[: len(audio) // config.hop_length * config.hop_length]
            if len(audio) < config.min_samples:
                raise VoiceconvError(
                    f"{row.path}: shorter than one mel frame ({len(audio)} samples) after trimming silence; "
                    "use a longer recording or --no-trim"
                )
            with torch.no_grad():
                mel = mel_fn(torch.from_numpy(audio)).numpy()  # (n_mels, n_frames)
        except Exception as error:  # every failure is recorded with its path, never dropped silently
            reason = " ".join(str(error).split()) or type(error).__name__  # one line
            if row.path not in reason:
                reason = f"{row.path}: {reason}"
            skipped.append({"path": row.path, "reason": reason})
            continue
        mels.append(mel.T.astype(np.float16))  # (n_frames, n_mels): frames contiguous for slicing
        audios.append(np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16))
        records.append(
            {"utterance_id": _utterance_id(row, number), "speaker": row.speaker, "path": row.path,
             "transcript": row.transcript, "n_frames": int(mel.shape[1]), "n_samples": int(len(audio))}
        )
    n_mels = config.n_mels
    temp = shard_path.with_name(shard_path.name + ".tmp.npz")
    np.savez(
        temp,
        mels=np.concatenate(mels) if mels else np.zeros((0, n_mels), np.float16),
        audio=np.concatenate(audios) if audios else np.zeros(0, np.int16),
        records=np.array(json.dumps(records)),
        skipped=np.array(json.dumps(skipped)),
    )
    os.replace(temp, shard_path)  # the shard exists only once complete: the resume point
    return str(shard_path)


def _shard_key(rows: list[ManifestRow], start: int, mel_dict: dict, trim: bool) -> str:
    """Hash of everything a shard's content depends on.

    The rows (path, speaker, transcript), their position (utterance ids number them), the mel config,
    trimming, and each file's size and modification time: a shard is reused only if recomputing it
    would give the same result, so editing the manifest or replacing a file recomputes just the
    shards it touches.
    """
    digest = hashlib.sha256(json.dumps({"start": start, "mel": mel_dict, "trim": trim}, sort_keys=True).encode())
    for row in rows:
        try:
            stat = os.stat(row.path)
            version = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            version = None
        digest.update(json.dumps([row.path, row.speaker, row.transcript, version]).encode())
    return digest.hexdigest()[:16]


@dataclass
class PrepareSummary:
    utterances: int
    speakers: int
    hours: float
    skipped: list[dict]
    reused_shards: int
    computed_shards: int


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))  # respects container/taskset limits, unlike cpu_count
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def prepare(
    manifest: str | Path,
    out_dir: str | Path,
    mel_config: MelConfig | None = None,
    workers: int | None = None,
    trim: bool = True,
    progress: bool = True,
    shard_size: int = SHARD_SIZE,
) -> PrepareSummary:
    """Compute log-mels for every manifest row into ``out_dir``, resumably and in parallel.

    Rows are processed in shards of ``shard_size`` utterances, each written atomically under
    ``out_dir/shards``. A re-run (after a crash, a kill or an edit of the manifest) reuses every
    shard whose inputs are unchanged and computes the rest; unreadable files are listed in
    ``skipped.csv`` and in the summary, never fatal. ``workers`` processes compute shards in
    parallel; 1 computes them in this process. The default is up to 4 (one per CPU), or 1 when
    fewer than ``SERIAL_BELOW`` utterances need computing, where starting processes costs more.
    """
    from tqdm import tqdm

    if shard_size < 1:
        raise VoiceconvError(f"shard size must be at least 1, got {shard_size}")
    mel_config = mel_config or MelConfig()
    rows = read_manifest(manifest)
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    # meta.json is written last and marks a complete cache; remove it first so a half-rewritten
    # directory is never mistaken for a finished one.
    (out_dir / "meta.json").unlink(missing_ok=True)
    for leftover in shard_dir.glob("*.tmp.npz"):
        leftover.unlink()  # a shard a killed worker was writing

    mel_dict = mel_config.to_dict()
    jobs, shard_paths = [], []
    for start in range(0, len(rows), shard_size):
        chunk = rows[start : start + shard_size]
        shard_path = shard_dir / f"shard_{start // shard_size:05d}_{_shard_key(chunk, start, mel_dict, trim)}.npz"
        shard_paths.append(shard_path)
        if not shard_path.exists():
            jobs.append((shard_path, chunk, start, mel_dict, trim))
    reused = len(shard_paths) - len(jobs)
    pending = sum(len(job[1]) for job in jobs)
    if workers is None:
        # A worker process costs ~1-3 s to start (importing torch); an utterance ~10 ms to compute.
        # Below a few hundred utterances the pool would cost more than it saves.
        workers = _default_workers() if pending >= SERIAL_BELOW else 1
    bar = tqdm(total=len(rows), initial=len(rows) - pending, unit="utt", desc="prepare",
               disable=not progress)
    if jobs:
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                _process_shard(job)
                bar.update(len(job[1]))
        else:
            # spawn, not fork: a forked child of a process that already ran OpenMP-parallel torch
            # code can deadlock, and library callers may well have done so before calling prepare.
            context = multiprocessing.get_context("spawn")
            try:
                with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
                    futures = {pool.submit(_process_shard, job): len(job[1]) for job in jobs}
                    for future in as_completed(futures):
                        future.result()
                        bar.update(futures[future])
            except BrokenProcessPool:
                raise VoiceconvError(
                    f"a prepare worker process died (out of memory, or a crash while decoding a file); finished "
                    f"shards are kept in {shard_dir}: re-run with --workers 1 to resume and find the file"
                ) from None
    bar.close()
    keep = set(shard_paths)
    for stale in shard_dir.glob("shard_*.npz"):
        if stale not in keep:
            stale.unlink()  # made for another manifest, config or file version
    summary = _consolidate(out_dir, shard_paths, mel_config)
    summary.reused_shards, summary.computed_shards = reused, len(jobs)
    return summary


def _consolidate(out_dir: Path, shard_paths: list[Path], mel_config: MelConfig) -> PrepareSummary:
    """Concatenate the shards into one memory-mappable array pair plus an index."""
    records, skipped, frame_total, sample_total = [], [], 0, 0
    shards = []
    for shard_path in shard_paths:
        try:
            with np.load(shard_path) as shard:
                shard_records = json.loads(str(shard["records"]))
                skipped += json.loads(str(shard["skipped"]))
        except Exception as error:  # shards are written atomically, so only a disk fault gets here
            shard_path.unlink(missing_ok=True)
            raise VoiceconvError(
                f"{shard_path}: unreadable shard ({type(error).__name__}); it was removed: re-run prepare to "
                "recompute it"
            ) from None
        shards.append(shard_path)
        for record in shard_records:
            record["frame_offset"], record["sample_offset"] = frame_total, sample_total
            frame_total += record["n_frames"]
            sample_total += record["n_samples"]
            records.append(record)
    # skipped.csv first: when every file failed it is the one thing the user needs to read.
    with open(out_dir / "skipped.csv.tmp", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "reason"])
        writer.writeheader()
        writer.writerows(skipped)
    os.replace(out_dir / "skipped.csv.tmp", out_dir / "skipped.csv")
    if not records:
        first = f"; the first: {skipped[0]['reason']}" if skipped else ""
        raise VoiceconvError(
            f"no usable audio: all {len(skipped)} files failed (listed in {out_dir / 'skipped.csv'}){first}"
        )
    mels = np.lib.format.open_memmap(out_dir / "mels.npy.tmp", "w+", np.float16, (frame_total, mel_config.n_mels))
    audio = np.lib.format.open_memmap(out_dir / "audio.npy.tmp", "w+", np.int16, (sample_total,))
    frame_at = sample_at = 0
    for shard_path in shards:
        with np.load(shard_path) as shard:
            shard_mels, shard_audio = shard["mels"], shard["audio"]
            mels[frame_at : frame_at + len(shard_mels)] = shard_mels
            audio[sample_at : sample_at + len(shard_audio)] = shard_audio
            frame_at += len(shard_mels)
            sample_at += len(shard_audio)
    mels.flush()
    audio.flush()
    del mels, audio
    os.replace(out_dir / "mels.npy.tmp", out_dir / "mels.npy")
    os.replace(out_dir / "audio.npy.tmp", out_dir / "audio.npy")
    fields = ["utterance_id", "speaker", "path", "transcript", "frame_offset", "n_frames", "sample_offset",
              "n_samples"]
    with open(out_dir / "index.csv.tmp", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
    os.replace(out_dir / "index.csv.tmp", out_dir / "index.csv")
    speakers = sorted({r["speaker"] for r in records})
    hours = sample_total / mel_config.sample_rate / 3600
    meta = {"mel": mel_config.to_dict(), "utterances": len(records), "speakers": len(speakers),
            "hours": hours, "skipped": len(skipped)}
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
    return PrepareSummary(len(records), len(speakers), hours, skipped, 0, 0)
