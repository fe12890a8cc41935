"""The evaluation pairs: the pairs CSV, and the converted outputs (and reference rows) to judge.

Pairs CSV (header required; relative paths resolve against the CSV's folder):

    source          the utterance whose words are kept
    target          one or several reference clips of the target speaker, separated by ';' or '|'
    ground_truth    optional: the target speaker saying the source's words (enables MCD)
    transcript      optional: what the source says (WER reference; without it the source's own
                    ASR hypothesis is the reference, which measures content *preservation*)
    set             optional: speaker-set label for grouping, e.g. seen / unseen (default "all")
    output          optional: file name of the converted audio (default NNNNN_<source stem>.wav,
                    NNNNN = 0-based row number, as `voiceconv batch` names them); relative to
                    --converted DIR, or to REPORT_DIR/converted when evaluate converts
    target_speaker  optional: speaker identity of the target clips, for verification trials
                    (default: the target field itself; ref lists that share a clip are one speaker)
"""

from __future__ import annotations

import csv
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voiceconv.audio import load_audio
from voiceconv.errors import VoiceconvError

log = logging.getLogger(__name__)

KNOWN_COLUMNS = ("source", "target", "ground_truth", "transcript", "set", "output", "target_speaker")


@dataclass
class Pair:
    """One row of the pairs CSV, with paths resolved."""

    index: int
    source: Path
    targets: list[Path]
    target_speaker: str
    ground_truth: Path | None = None
    transcript: str | None = None
    set: str = "all"
    output: str = ""


def read_pairs(path: str | Path) -> list[Pair]:
    """Read and validate a pairs CSV (columns in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise VoiceconvError(f"{path}: pairs CSV not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = {"source", "target"} - set(columns)
        if missing:
            raise VoiceconvError(
                f"{path}: the pairs CSV needs a header with at least source,target (optional: "
                f"{','.join(KNOWN_COLUMNS[2:])}); missing {sorted(missing)}, found {columns}"
            )
        unknown = sorted(set(columns) - set(KNOWN_COLUMNS))
        if unknown:
            log.warning("%s: ignoring unknown columns %s (known: %s)", path, unknown, ", ".join(KNOWN_COLUMNS))
        records = [{key.strip(): (value or "").strip() for key, value in row.items() if key} for row in reader]

    def resolve(value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else path.parent / candidate

    pairs = []
    for index, record in enumerate(records):
        line = f"{path}:{index + 2}"
        if not record.get("source") or not record.get("target"):
            raise VoiceconvError(f"{line}: empty source or target")
        targets = [resolve(item.strip()) for item in re.split(r"[;|]", record["target"]) if item.strip()]
        if any(target.suffix.lower() == ".spk" for target in targets):
            raise VoiceconvError(f"{line}: target is a .spk speaker file; the judges need the reference audio "
                                 "clips themselves, so list those in the target column")
        output = record.get("output") or f"{index:05d}_{resolve(record['source']).stem}.wav"
        pairs.append(
            Pair(
                index=index,
                source=resolve(record["source"]),
                targets=targets,
                target_speaker=record.get("target_speaker") or ";".join(str(target) for target in targets),
                ground_truth=resolve(record["ground_truth"]) if record.get("ground_truth") else None,
                transcript=record.get("transcript") or None,
                set=record.get("set") or "all",
                output=output,
            )
        )
    if not pairs:
        raise VoiceconvError(f"{path}: the pairs CSV has no rows")
    for pair in pairs:
        for file in [pair.source, *pair.targets, *([pair.ground_truth] if pair.ground_truth else [])]:
            if not file.is_file():
                raise VoiceconvError(f"{path}:{pair.index + 2}: {file} not found (relative paths start at the CSV)")
    return pairs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def resolve_outputs(pairs: list[Pair], converted_dir: Path) -> dict[int, Path]:
    """Existing converted files for ``--converted DIR``; every pair's output must exist."""
    outputs, missing = {}, []
    for pair in pairs:
        candidate = Path(pair.output)
        candidate = candidate if candidate.is_absolute() else converted_dir / candidate
        if candidate.is_file():
            outputs[pair.index] = candidate
        else:
            missing.append(str(candidate))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VoiceconvError(
            f"{len(missing)} converted files not found: {shown}. Name them as in the pairs CSV's output column "
            "(default NNNNN_<source stem>.wav, NNNNN = 0-based row, as 'voiceconv batch' writes them), or omit "
            "--converted to convert with a model"
        )
    return outputs


def convert_pairs(
    pairs: list[Pair],
    out_dir: Path,
    model: str | None = None,
    vocoder: str | None = None,
    device: str | None = None,
    pitch: str | float | None = None,
    progress: bool = True,
    converter=None,
    adapt_steps: int | None = None,
) -> tuple[dict[int, Path], dict[int, float], dict]:
    """Convert every pair with :class:`voiceconv.convert.converter.VoiceConverter` (``converter``, or one loaded here).

    Returns ``(outputs, compute seconds per pair, model description)``. The timed span is
    ``convert`` (loading the source, the model, the vocoder); the target embedding is cached per
    target list and timed apart, as a real application embeds each speaker once.
    """
    from tqdm import tqdm

    from voiceconv.audio import save_audio
    from voiceconv.convert.converter import VoiceConverter

    if converter is None:
        converter = VoiceConverter.from_pretrained(model, vocoder=vocoder, device=device, adapt_steps=adapt_steps)
    speakers: dict[str, object] = {}
    outputs, seconds = {}, {}
    embed_seconds = []
    for pair in tqdm(pairs, desc="converting", disable=not progress):
        key = ";".join(str(target) for target in pair.targets)
        if key not in speakers:
            start = time.perf_counter()
            speakers[key] = converter.embed_speaker([str(target) for target in pair.targets])
            embed_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        audio = converter.convert(str(pair.source), speakers[key], pitch=pitch)
        seconds[pair.index] = time.perf_counter() - start
        outputs[pair.index] = save_audio(out_dir / "converted" / pair.output, audio, converter.sample_rate)
    description = {
        "model": str(model) if model else "shipped default (voiceconv/pretrained/vc)",
        "vocoder": str(vocoder) if vocoder else "default",
        "device": str(device or "auto"),
        "pitch": str(pitch),
        "adapt_steps": converter.adapt_steps,
        "sample_rate": converter.sample_rate,
        "median_embed_seconds": float(np.median(embed_seconds)) if embed_seconds else None,
    }
    return outputs, seconds, description


# The reference rows: where along the chain (vocoder, auto-encoder, speaker change) quality is lost.
STAGES = {
    "resynthesis": "vocoder resynthesis of the source's own mel (what the vocoder alone loses)",
    "reconstruction": "the VC model converting the source toward its own voice, then the vocoder "
                      "(what the auto-encoder adds to the vocoder's loss)",
    "conversion": "the conversion itself (what the speaker change adds)",
}


def reference_outputs(pairs: list[Pair], out_dir: Path, converter, progress: bool = True) -> dict[str, dict[int, Path]]:
    """Resynthesis and self-reconstruction of every distinct source, for the reference rows.

    Returns ``{"resynthesis": {pair index: path}, "reconstruction": {...}}``; files go to
    ``out_dir/references/<stage>/``. Both use the conversion's own front end, model and vocoder.
    """
    import torch
    from tqdm import tqdm

    from voiceconv.audio import save_audio

    outputs: dict[str, dict[int, Path]] = {"resynthesis": {}, "reconstruction": {}}
    done: dict[Path, tuple[Path, Path]] = {}
    for pair in tqdm(pairs, desc="reference rows", disable=not progress):
        if pair.source not in done:
            audio = load_audio(pair.source, converter.sample_rate)
            mel = converter.frontend(torch.from_numpy(audio))  # (n_mels, T)
            with torch.inference_mode():
                resynthesis = converter.vocoder.decode(mel.unsqueeze(0).to(converter.device))[0]
            resynthesis = resynthesis.float().cpu().numpy()[: audio.size]
            own_voice = converter.embed_speaker([str(pair.source)])
            reconstruction = converter.convert(str(pair.source), own_voice).numpy()
            name = f"{pair.index:05d}_{pair.source.stem}.wav"
            done[pair.source] = (
                save_audio(out_dir / "references" / "resynthesis" / name, resynthesis, converter.sample_rate),
                save_audio(out_dir / "references" / "reconstruction" / name, reconstruction, converter.sample_rate),
            )
        outputs["resynthesis"][pair.index], outputs["reconstruction"][pair.index] = done[pair.source]
    return outputs
