#!/usr/bin/env python3
"""Stage 1 of the VCTK recipe: manifests and the resolved eval pair list from a VCTK tree on disk.

Handles both public layouts (the files are used where they are; resampling to the model rate and
silence trimming happen in ``voiceconv prepare``):

* release 0.92 (DataShare, ``VCTK-Corpus-0.92.zip``)::

      wav48_silence_trimmed/p225/p225_001_mic1.flac   (and _mic2; --mic picks one)
      txt/p225/p225_001.txt

* release 0.80 (``VCTK-Corpus.tar.gz``)::

      wav48/p225/p225_001.wav
      txt/p225/p225_001.txt

Outputs in ``--out``: ``train.csv`` (seen speakers minus the validation utterances), ``valid.csv``
(seen speakers' utterances 001-024), ``unseen.csv`` (every utterance of the 20 unseen speakers), all
with columns path,speaker,transcript and absolute paths; ``eval_pairs.csv`` (the committed pair list
resolved to files, in the pairs-CSV format of ``voiceconv batch``/``evaluate``); ``summary.json``.

Usage: ``python recipes/vctk/local/prepare_vctk.py --corpus VCTK-Corpus-0.92 --out data/vctk [--mic mic2]``
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
from pathlib import Path

logger = logging.getLogger("prepare_vctk")

UTTERANCE = re.compile(r"^(?P<speaker>[a-z]+\d+)_(?P<number>\d{3})(?:_(?P<mic>mic\d))?$")
REF_FIRST = 25  # references come from the speaker's own sentences, 025 onwards (see make_splits.py)
PAIR_FIELDS = ["source", "target", "ground_truth", "transcript", "target_speaker", "set", "output"]
DOWNLOAD_HELP = (
    "get VCTK from https://datashare.ed.ac.uk/handle/10283/3443 (release 0.92, VCTK-Corpus-0.92.zip: "
    "wav48_silence_trimmed/ with FLAC) or the older release 0.80 (VCTK-Corpus.tar.gz: wav48/ with WAV), unpack it "
    "and pass the folder that contains txt/"
)


def find_audio(corpus: Path, mic: str) -> tuple[str, dict[str, Path]]:
    """Return (layout name, utterance id -> audio path) for the layout found under ``corpus``."""
    new, old = corpus / "wav48_silence_trimmed", corpus / "wav48"
    if new.is_dir():
        by_mic: dict[str, dict[str, Path]] = {}
        for path in sorted(new.glob("*/*.flac")):
            match = UTTERANCE.match(path.stem)
            if match and match["mic"]:
                by_mic.setdefault(match["mic"], {})[f"{match['speaker']}_{match['number']}"] = path
        chosen = dict(by_mic.get(mic, {}))
        # Some utterances exist for one microphone only (p280, p362 in 0.92): use the other mic rather than lose them.
        fallback = 0
        for other, files in by_mic.items():
            for utterance, path in files.items():
                if other != mic and utterance not in chosen:
                    chosen[utterance] = path
                    fallback += 1
        if fallback:
            logger.warning("%d utterances have no %s file; using the other microphone for them", fallback, mic)
        return "0.92", chosen
    if old.is_dir():
        audio = {}
        for path in sorted(old.glob("*/*.wav")):
            if UTTERANCE.match(path.stem):
                audio[path.stem] = path
        return "0.80", audio
    raise SystemExit(f"{corpus}: neither wav48_silence_trimmed/ (VCTK 0.92) nor wav48/ (VCTK 0.80) found; "
                     + DOWNLOAD_HELP)


def read_texts(corpus: Path) -> dict[str, str]:
    texts = {}
    for path in sorted((corpus / "txt").glob("*/*.txt")):
        texts[path.stem] = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
    return texts


def normalize(text: str) -> str:
    """Compare sentences ignoring case and punctuation: speakers' transcripts differ in commas and quotes."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def read_list(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line.split()[0])
    return out


def speaker_of(utterance: str) -> str:
    return utterance.rsplit("_", 1)[0]


def number_of(utterance: str) -> int:
    return int(utterance.rsplit("_", 1)[1])


class PairResolver:
    """Map the committed utterance ids to files, substituting deterministically when a release lacks one."""

    def __init__(self, audio: dict[str, Path], texts: dict[str, str]):
        self.audio, self.texts = audio, texts
        self.by_speaker: dict[str, list[str]] = {}
        for utterance in sorted(audio):
            self.by_speaker.setdefault(speaker_of(utterance), []).append(utterance)

    def next_existing(self, utterance: str, minimum: int = 0, exclude: set[str] = frozenset()) -> str | None:
        """``utterance`` if present, else the speaker's next existing number >= max(its number, minimum)."""
        if utterance in self.audio and utterance not in exclude and number_of(utterance) >= minimum:
            return utterance
        floor = max(number_of(utterance), minimum)
        for candidate in self.by_speaker.get(speaker_of(utterance), []):
            if number_of(candidate) >= floor and candidate not in exclude:
                return candidate
        return None

    def same_text(self, source: str, target_speaker: str, preferred: str) -> str | None:
        """The target's utterance with the source's sentence: the preferred id if its text matches, else a search."""
        wanted = normalize(self.texts.get(source, ""))
        if not wanted:
            return None
        if preferred in self.audio and normalize(self.texts.get(preferred, "")) == wanted:
            return preferred
        for candidate in self.by_speaker.get(target_speaker, []):
            if normalize(self.texts.get(candidate, "")) == wanted:
                return candidate
        return None

    def resolve(self, row: dict) -> dict | None:
        source = self.next_existing(row["source"])
        refs: list[str] = []
        for ref in row["target"].split(";"):
            found = self.next_existing(ref, REF_FIRST, exclude=set(refs))
            if found:
                refs.append(found)
        if source is None or not refs:
            return None
        ground_truth = self.same_text(source, row["target_speaker"], row.get("ground_truth", ""))
        return {
            "source": str(self.audio[source]),
            "target": ";".join(str(self.audio[ref]) for ref in refs),
            "ground_truth": str(self.audio[ground_truth]) if ground_truth else "",
            "transcript": self.texts.get(source, ""),
            "target_speaker": row["target_speaker"],
            "set": row["set"],
            "output": row["output"],
        }


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="VCTK folder containing txt/ and wav48*/")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the manifests")
    parser.add_argument("--splits", type=Path, default=Path(__file__).resolve().parents[1] / "splits",
                        help="committed splits folder (default: recipes/vctk/splits)")
    parser.add_argument("--mic", choices=["mic1", "mic2"], default="mic1",
                        help="release 0.92 microphone: mic1 (DPA 4035 omni, the one most papers use) or mic2 "
                        "(Sennheiser MKH 800); ignored for 0.80, which has one microphone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    corpus = args.corpus.resolve()
    if not (corpus / "txt").is_dir():
        raise SystemExit(f"{corpus}: no txt/ folder; {DOWNLOAD_HELP}")
    layout, audio = find_audio(corpus, args.mic)
    if not audio:
        raise SystemExit(f"{corpus}: found the {layout} layout but no audio files in it; {DOWNLOAD_HELP}")
    texts = read_texts(corpus)
    unseen = set(read_list(args.splits / "unseen_speakers.txt"))
    valid = set(read_list(args.splits / "valid_utterances.txt"))
    with open(args.splits / "eval_pairs.csv", newline="") as handle:
        committed_pairs = list(csv.DictReader(handle))

    rows = {"train": [], "valid": [], "unseen": []}
    for utterance, path in sorted(audio.items()):
        speaker = speaker_of(utterance)
        part = "unseen" if speaker in unseen else "valid" if utterance in valid else "train"
        rows[part].append({"path": str(path), "speaker": speaker, "transcript": texts.get(utterance, "")})
    args.out.mkdir(parents=True, exist_ok=True)
    for part, part_rows in rows.items():
        if not part_rows:
            raise SystemExit(f"{corpus}: no {part} utterances; is this a complete VCTK tree? {DOWNLOAD_HELP}")
        write_csv(args.out / f"{part}.csv", ["path", "speaker", "transcript"], part_rows)

    resolver = PairResolver(audio, texts)
    pairs, dropped = [], []
    for row in committed_pairs:
        resolved = resolver.resolve(row)
        (pairs if resolved else dropped).append(resolved or row)
    if dropped:
        logger.warning("%d eval pairs dropped (speaker missing from this corpus): %s", len(dropped),
                       ", ".join(row["output"] for row in dropped[:5]))
    if not pairs:
        raise SystemExit(f"{corpus}: none of the eval pairs' speakers are present; {DOWNLOAD_HELP}")
    write_csv(args.out / "eval_pairs.csv", PAIR_FIELDS, pairs)

    summary = {
        "corpus": str(corpus), "layout": layout, "mic": args.mic if layout == "0.92" else "single",
        **{f"{part}_utterances": len(part_rows) for part, part_rows in rows.items()},
        **{f"{part}_speakers": len({r["speaker"] for r in part_rows}) for part, part_rows in rows.items()},
        "without_transcript": sum(1 for u in audio if u not in texts),
        "eval_pairs": len(pairs), "eval_pairs_dropped": len(dropped),
        "eval_pairs_with_ground_truth": sum(1 for p in pairs if p["ground_truth"]),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("VCTK %s: %s", layout, json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
