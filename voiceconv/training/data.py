"""Manifests, the prepared feature cache, and the speaker-balanced segment batcher.

Manifest: a CSV with a header and the columns ``path,speaker`` plus optional ``transcript``
(extra columns are ignored). Relative paths are relative to the manifest's folder.

Prepared directory (written by :func:`prepare`, read by :class:`PreparedCorpus`)::

    meta.json       mel config, counts, skipped files
    index.csv       utterance_id, speaker, path, transcript, frame_offset, n_frames, sample_offset, n_samples
    mels.npy        (total_frames, n_mels) float16, memory-mapped for cheap random reads
    audio.npy       (total_samples,) int16 at the mel rate (for vocoder training), memory-mapped
    skipped.csv     path, reason for every file that could not be used
    shards/         per-chunk results; a re-run reuses finished shards, so an interrupted run resumes

Training reads random segments through :class:`SegmentBatcher`, whose batch for step ``s`` is a
pure function of ``(seed, s, rank)``. Resuming at step ``s`` therefore replays the exact data order
with no sampler state to save.
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


@dataclass
class Utterance:
    utterance_id: str
    speaker: str
    path: str
    transcript: str
    frame_offset: int
    n_frames: int
    sample_offset: int
    n_samples: int


class PreparedCorpus:
    """Read access to a directory written by :func:`prepare`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise VoiceconvError(f"{self.directory}: not a prepared directory (no meta.json); run 'voiceconv prepare'")
        self.meta = json.loads(meta_path.read_text())
        self.mel_config = MelConfig.from_dict(self.meta["mel"])
        with open(self.directory / "index.csv", newline="") as handle:
            self.utterances = [
                Utterance(r["utterance_id"], r["speaker"], r["path"], r["transcript"], int(r["frame_offset"]),
                          int(r["n_frames"]), int(r["sample_offset"]), int(r["n_samples"]))
                for r in csv.DictReader(handle)
            ]
        self.speakers = sorted({u.speaker for u in self.utterances})
        self._mels = None
        self._audio = None

    @property
    def mels(self) -> np.ndarray:
        # Opened lazily so the object pickles cheaply into worker processes.
        if self._mels is None:
            self._mels = np.load(self.directory / "mels.npy", mmap_mode="r")
        return self._mels

    @property
    def audio_array(self) -> np.ndarray:
        if self._audio is None:
            self._audio = np.load(self.directory / "audio.npy", mmap_mode="r")
        return self._audio

    def __len__(self) -> int:
        return len(self.utterances)

    def mel(self, index: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Log-mel of utterance ``index``, ``(n_mels, frames)`` float32."""
        u = self.utterances[index]
        length = u.n_frames - start if length is None else length
        return np.asarray(self.mels[u.frame_offset + start : u.frame_offset + start + length], np.float32).T

    def audio(self, index: int, start_frame: int = 0, n_frames: int | None = None) -> np.ndarray:
        """Waveform of utterance ``index`` aligned to its frames, ``(frames * hop,)`` float32."""
        u = self.utterances[index]
        hop = self.mel_config.hop_length
        n_frames = u.n_frames - start_frame if n_frames is None else n_frames
        begin = u.sample_offset + start_frame * hop
        return np.asarray(self.audio_array[begin : begin + n_frames * hop], np.float32) / 32767.0

    def indices_for(self, speakers) -> list[int]:
        wanted = set(speakers)
        return [i for i, u in enumerate(self.utterances) if u.speaker in wanted]

    def split_speakers(self, n_held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
        """Deterministically hold out ``n_held_out`` speakers (for unseen-speaker validation)."""
        rng = np.random.default_rng(seed)
        order = list(rng.permutation(len(self.speakers)))
        held = sorted(self.speakers[i] for i in order[:n_held_out])
        return [s for s in self.speakers if s not in held], held


class SegmentBatcher:
    """Speaker-balanced random segments: a speaker uniformly, one of their utterances, an offset.

    ``batch(step)`` depends only on ``(seed, step, rank)``, so resumption and DDP sharding need no
    sampler state. Utterances shorter than the segment are padded with the silence value (the
    log of the mel clamp) and the returned ``mask`` marks real frames.
    """

    def __init__(self, corpus: PreparedCorpus, segment_frames: int, batch_size: int, seed: int = 0,
                 indices: list[int] | None = None, rank: int = 0, world_size: int = 1, with_audio: bool = False,
                 speaker_ids: dict[str, int] | None = None, with_reference: bool = False):
        self.corpus = corpus
        self.with_reference = with_reference
        self.segment_frames = segment_frames
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.with_audio = with_audio
        indices = list(range(len(corpus))) if indices is None else list(indices)
        if not indices:
            raise VoiceconvError("no utterances to sample from")
        self.by_speaker: dict[str, list[int]] = {}
        for i in indices:
            self.by_speaker.setdefault(corpus.utterances[i].speaker, []).append(i)
        self.speakers = sorted(self.by_speaker)
        # Speaker ids are over the whole corpus so a classifier sees consistent labels across splits.
        self.speaker_ids = speaker_ids or {s: k for k, s in enumerate(corpus.speakers)}

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """``mel (B, n_mels, S)``, ``speaker (B,)``, ``mask (B, S)``, optionally ``audio (B, S * hop)``.

        With ``with_reference``, also ``ref_mel (B, n_mels, S)`` and ``ref_mask (B, S)``: another
        random segment of the same speaker (another utterance when there is one), for the speaker
        encoder, so that it must describe the voice rather than the segment being rebuilt.
        """
        rng = np.random.default_rng([self.seed, step, self.rank])
        c = self.corpus.mel_config
        S = self.segment_frames
        mels = np.full((self.batch_size, c.n_mels, S), c.min_log, np.float32)
        mask = np.zeros((self.batch_size, S), np.float32)
        audio = np.zeros((self.batch_size, S * c.hop_length), np.float32) if self.with_audio else None
        speakers = np.zeros(self.batch_size, np.int64)
        for b in range(self.batch_size):
            speaker = self.speakers[rng.integers(len(self.speakers))]
            index = self.by_speaker[speaker][rng.integers(len(self.by_speaker[speaker]))]
            n_frames = self.corpus.utterances[index].n_frames
            length = min(S, n_frames)
            start = int(rng.integers(n_frames - length + 1))
            mels[b, :, :length] = self.corpus.mel(index, start, length)
            mask[b, :length] = 1.0
            if audio is not None:
                audio[b, : length * c.hop_length] = self.corpus.audio(index, start, length)
            speakers[b] = self.speaker_ids[speaker]
        out = {"mel": torch.from_numpy(mels), "speaker": torch.from_numpy(speakers), "mask": torch.from_numpy(mask)}
        if self.with_reference:
            out.update(self._references(step, speakers))
        if audio is not None:
            out["audio"] = torch.from_numpy(audio)
        return out

    def _references(self, step: int, speaker_ids: np.ndarray) -> dict[str, torch.Tensor]:
        # A generator of its own, so the main segments are the same with and without references.
        rng = np.random.default_rng([self.seed, step, self.rank, 1])
        names = {k: s for s, k in self.speaker_ids.items()}
        c = self.corpus.mel_config
        S = self.segment_frames
        mels = np.full((len(speaker_ids), c.n_mels, S), c.min_log, np.float32)
        mask = np.zeros((len(speaker_ids), S), np.float32)
        for b, speaker_id in enumerate(speaker_ids):
            utterances = self.by_speaker[names[int(speaker_id)]]
            index = utterances[rng.integers(len(utterances))]
            n_frames = self.corpus.utterances[index].n_frames
            length = min(S, n_frames)
            start = int(rng.integers(n_frames - length + 1))
            mels[b, :, :length] = self.corpus.mel(index, start, length)
            mask[b, :length] = 1.0
        return {"ref_mel": torch.from_numpy(mels), "ref_mask": torch.from_numpy(mask)}
