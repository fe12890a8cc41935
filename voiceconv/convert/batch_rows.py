"""The rows of a batch: reading and resolving the pairs CSV (safe output paths, shards), and checking which
outputs already exist complete. :mod:`voiceconv.convert.batch` runs them."""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import soundfile as sf

from voiceconv.convert.converter import OUTPUT_FORMATS
from voiceconv.convert.speaker import SPEAKER_SUFFIX
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

LENGTH_TOLERANCE = 256  # samples: an existing output within one hop of the expected length is complete


class BatchError(VoiceconvError):
    """The pairs file or the batch options are unusable (a single bad row is not a BatchError)."""


@dataclass
class Row:
    """One CSV row, resolved. ``error`` is set when the row is unusable before any conversion."""

    index: int
    source: str
    target: str
    output_name: str
    source_path: Path | None = None
    target_paths: list[Path] = field(default_factory=list)
    output_path: Path | None = None
    error: str | None = None

    @property
    def speaker_key(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.target_paths)


# ---- reading the pairs --------------------------------------------------------------------------


def safe_output_path(out_dir: Path, name: str) -> Path:
    """``out_dir / name``, refusing anything that would land outside ``out_dir``.

    Rejects absolute paths, ``..`` components and paths that leave ``out_dir`` through a symlink;
    a name without an audio extension gets ``.wav``.
    """
    if not name.strip():
        raise VoiceconvError("empty output name")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name) or PurePosixPath(name).is_absolute():
        raise VoiceconvError(f"output '{name}' is an absolute path; give a name relative to --out-dir")
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        raise VoiceconvError(f"output '{name}' contains '..'; outputs must stay inside --out-dir")
    path = out_dir.joinpath(*[p for p in parts if p not in ("", ".")])
    if path.suffix.lower() not in OUTPUT_FORMATS:
        if path.suffix:
            raise VoiceconvError(f"output '{name}' has extension {path.suffix}; use one of "
                                 f"{', '.join(OUTPUT_FORMATS)}")
        path = path.with_name(path.name + ".wav")
    root = out_dir.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise VoiceconvError(f"output '{name}' escapes --out-dir through a symlink (it resolves to {resolved})")
    return path


def read_pairs(csv_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[Row]:
    """Parse and resolve every row; a row's own problems go to ``Row.error``, file-level ones raise."""
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    if not csv_path.is_file():
        raise BatchError(f"{csv_path}: pairs file not found")
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = {"source", "target"} - set(columns)
        if missing:
            raise BatchError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; the header must name "
                             f"source,target[,output] (found: {', '.join(columns) or 'nothing'})")
        raw_rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not raw_rows:
        raise BatchError(f"{csv_path}: no rows below the header")
    rows, seen = [], {}
    for index, raw in enumerate(raw_rows):
        source, target, output = raw.get("source", ""), raw.get("target", ""), raw.get("output", "")
        row = Row(index, source, target, output or f"{index:05d}_{Path(source).stem or 'row'}.wav")
        rows.append(row)
        try:
            if not source:
                raise VoiceconvError("empty 'source'")
            refs = [part.strip() for part in re.split(r"[;|]", target) if part.strip()]
            if not refs:
                raise VoiceconvError("empty 'target'")
            if any(r.lower().endswith(SPEAKER_SUFFIX) for r in refs) and len(refs) > 1:
                raise VoiceconvError(f"target mixes a {SPEAKER_SUFFIX} file with other references; give one or "
                                     "the other")
            row.source_path = _resolve(base, source)
            row.target_paths = [_resolve(base, r) for r in refs]
            row.output_path = safe_output_path(out_dir, row.output_name)
            key = str(row.output_path.resolve())
            if key in seen:
                raise VoiceconvError(f"output '{row.output_name}' is also the output of row {seen[key]}")
            seen[key] = index
        except VoiceconvError as error:
            row.error = str(error)
    return rows


def _resolve(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


def resolve_shard(spec: str | None = None, environ: dict | None = None) -> tuple[int, int]:
    """``(K, N)`` from ``"K/N"``, else RANK/WORLD_SIZE, else SLURM_PROCID/SLURM_NTASKS, else ``(0, 1)``."""
    environ = os.environ if environ is None else environ
    if spec:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if not match:
            raise BatchError(f"--shard must look like K/N (e.g. 0/4), got {spec!r}")
        k, n, where = int(match.group(1)), int(match.group(2)), "--shard"
    elif "WORLD_SIZE" in environ and "RANK" in environ:
        k, n, where = _env_int(environ, "RANK"), _env_int(environ, "WORLD_SIZE"), "RANK/WORLD_SIZE"
    elif "SLURM_NTASKS" in environ and "SLURM_PROCID" in environ:
        k, n, where = _env_int(environ, "SLURM_PROCID"), _env_int(environ, "SLURM_NTASKS"), "SLURM_PROCID/NTASKS"
    else:
        return 0, 1
    if n < 1 or not 0 <= k < n:
        raise BatchError(f"{where}: shard {k} of {n} is impossible; need 0 <= K < N")
    return k, n


def _env_int(environ, name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise BatchError(f"environment variable {name}={environ[name]!r} is not an integer") from None


# ---- checking outputs ---------------------------------------------------------------------------


def expected_samples(source: Path, sample_rate: int) -> int | None:
    """Length of ``source`` at ``sample_rate`` from its header (None if unreadable)."""
    try:
        info = sf.info(str(source))
    except Exception:  # any unreadable source: the conversion attempt will report it properly
        return None
    return int(round(info.frames * sample_rate / info.samplerate))


def output_is_complete(row: Row, sample_rate: int) -> bool:
    """An existing output that decodes, at the model rate, with the source's length (within a hop)."""
    path = row.output_path
    if path is None or not path.is_file():
        return False
    expected = expected_samples(row.source_path, sample_rate)
    if expected is None:
        return False
    try:
        with sf.SoundFile(str(path)) as handle:
            if handle.samplerate != sample_rate or handle.channels != 1:
                return False
            frames = 0
            while block := len(handle.read(1 << 16, dtype="float32")):
                frames += block
    except Exception:  # unreadable = not complete; any libsndfile error counts
        return False
    return abs(frames - expected) <= LENGTH_TOLERANCE


def remove_stale_temporaries(rows: list[Row]) -> None:
    """Delete temporary files a killed run left for *these* rows (other shards' are left alone)."""
    for row in rows:
        if row.output_path is None or not row.output_path.parent.is_dir():
            continue
        prefix, suffix = f".{row.output_path.name}.", f".tmp{row.output_path.suffix.lower()}"
        for stale in row.output_path.parent.glob(f".{glob_escape(row.output_path.name)}.*"):
            if stale.name.startswith(prefix) and stale.name.endswith(suffix):
                stale.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
