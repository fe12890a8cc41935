#!/usr/bin/env python3
"""Synthesise a small multi-speaker English corpus with the TTS voices that Debian ships.

The bundled real speech has 251 LibriSpeech speakers with ONE 12 s utterance each plus one speaker
(Kathleen) with 1102 sentences. That gives speaker variety but almost no within-speaker variety.
Synthetic voices add speakers with many sentences each, so the speaker encoder sees the same voice
saying different things and the content encoder sees the same text in different voices.

Voices (one "speaker" label each):

* espeak-ng formant variants (en-us+m1..m8, f1..f5, klatt..klatt4 and a few named variants);
* the five recorded English voices behind flite and festival (kal, ked, awb, rms, slt). Where two
  engines use the same recorded person (flite kal16 and festival kal_diphone; flite slt and
  festival slt-hts) they share ONE speaker label: same person, different engine;
* four "derived" speakers: a recorded voice shifted with sox ``pitch`` (which moves pitch AND
  formants, like a different vocal-tract length), labelled as new speakers.

Everything is written as 16-bit mono WAV at ``--sample-rate`` (default 16 kHz, the rate of the real
data: if synthetic audio kept its 22.05 kHz bandwidth and real audio did not, bandwidth alone would
tell the speaker encoder "synthetic or real"), peak-normalised to -3 dBFS.

Sentences come from the Kathleen (CMU ARCTIC prompt) transcripts in the bundled manifest; each
speaker gets its own deterministic random draw, so speakers share some but not all texts.

Usage::

    python recipes/mini/local/make_synthetic.py --speech-dir ../shared/data/speech \
        --out data/mini/synthetic --per-speaker 30 --jobs 2

Resumable: existing WAVs are kept, so a re-run only makes the missing ones. Writes
``<out>/manifest.csv`` with the columns path (relative to <out>), speaker, transcript, engine, voice.
Requires: espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox (apt).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("make_synthetic")

APT_PACKAGES = "espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox"


@dataclass(frozen=True)
class Voice:
    """One synthesis setting. ``speaker`` is the label; several Voices may share it (same person)."""

    speaker: str
    engine: str  # espeak | flite | festival
    voice: str  # engine-specific voice name
    pitch: int = 50  # espeak -p (0-99); 50 is espeak's default
    speed: int = 165  # espeak -s words per minute; 175 is espeak's default, a little slower is clearer
    shift_cents: int = 0  # sox pitch shift applied after synthesis (0 = none)


def default_voices() -> list[Voice]:
    """The fixed voice list. Changing it changes the corpus, so add to the end only."""
    voices = []
    # espeak-ng: male/female formant variants, distinct by speaker embedding (see ENVIRONMENT.md).
    for name in [f"m{i}" for i in range(1, 9)] + [f"f{i}" for i in range(1, 6)]:
        voices.append(Voice(f"syn_espeak_{name}", "espeak", f"en-us+{name}"))
    # Klatt-synthesiser variants use another source model, so they sound unlike the m/f variants.
    for name in ["klatt", "klatt2", "klatt3", "klatt4"]:
        voices.append(Voice(f"syn_espeak_{name}", "espeak", f"en-us+{name}"))
    # Named variants with their own formant/pitch settings; pitch moved off the default to separate them more.
    voices += [
        Voice("syn_espeak_steph", "espeak", "en-us+steph", pitch=60),
        Voice("syn_espeak_linda", "espeak", "en-us+linda", pitch=45),
        Voice("syn_espeak_david", "espeak", "en-us+david", pitch=35),
        Voice("syn_espeak_john", "espeak", "en-us+john", pitch=40),
        Voice("syn_espeak_m3_low", "espeak", "en-us+m3", pitch=20, speed=150),
        Voice("syn_espeak_f2_high", "espeak", "en-us+f2", pitch=80, speed=180),
    ]
    # Recorded people behind flite / festival. Same person through two engines -> one label.
    voices += [
        Voice("syn_kal", "flite", "kal16"),
        Voice("syn_kal", "festival", "kal_diphone"),
        Voice("syn_slt", "flite", "slt"),
        Voice("syn_slt", "festival", "cmu_us_slt_arctic_hts"),
        Voice("syn_awb", "flite", "awb"),
        Voice("syn_rms", "flite", "rms"),
        Voice("syn_ked", "festival", "ked_diphone"),
    ]
    # Derived speakers: sox "pitch" = speed change + tempo restore, so formants move with F0.
    voices += [
        Voice("syn_awb_up", "flite", "awb", shift_cents=300),
        Voice("syn_rms_down", "flite", "rms", shift_cents=-250),
        Voice("syn_slt_down", "flite", "slt", shift_cents=-300),
        Voice("syn_ked_up", "festival", "ked_diphone", shift_cents=250),
    ]
    return voices


def read_sentences(speech_dir: Path, min_words: int, max_words: int) -> list[str]:
    """Kathleen transcripts from the bundled manifest, filtered by length, in manifest order."""
    manifest = speech_dir / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: not found; pass --speech-dir pointing at the bundled speech folder")
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    sentences = []
    for row in rows:
        text = (row.get("transcript") or "").strip()
        if row.get("dataset") == "kathleen" and text and min_words <= len(text.split()) <= max_words:
            sentences.append(text)
    if not sentences:
        raise SystemExit(f"{manifest}: no Kathleen transcripts with {min_words}-{max_words} words")
    return sentences


def check_tools(voices: list[Voice]) -> None:
    needed = {"sox"} | {{"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}[v.engine] for v in voices}
    missing = sorted(tool for tool in needed if shutil.which(tool) is None)
    if missing:
        raise SystemExit(f"missing programs {missing}; install them with: apt-get install -y {APT_PACKAGES}")


def _seed(*parts: str) -> int:
    # crc32, not hash(): Python's str hash is salted per process, which would make the draw irreproducible.
    return zlib.crc32("/".join(parts).encode())


def synthesise(voice: Voice, text: str, out_path: Path, sample_rate: int) -> None:
    """Write one utterance to ``out_path`` atomically (tmp file + rename), so a killed run leaves no half files."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        raw = Path(tmp) / "raw.wav"
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.voice, "-p", str(voice.pitch), "-s", str(voice.speed), "-w", str(raw), text]
            subprocess.run(cmd, check=True, capture_output=True)
        elif voice.engine == "flite":
            cmd = ["flite", "-voice", voice.voice, "-t", text, "-o", str(raw)]
            subprocess.run(cmd, check=True, capture_output=True)
        elif voice.engine == "festival":
            cmd = ["text2wave", "-eval", f"(voice_{voice.voice})", "-o", str(raw)]
            subprocess.run(cmd, input=text.encode(), check=True, capture_output=True)
        else:
            raise ValueError(f"unknown engine {voice.engine}")
        effects = ["pitch", str(voice.shift_cents)] if voice.shift_cents else []
        # rate -v: sox's very-high-quality resampler; norm -3: same peak level for every engine.
        effects += ["rate", "-v", str(sample_rate), "norm", "-3"]
        tmp_out = Path(tmp) / "out.wav"
        cmd = ["sox", str(raw), "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp_out)] + effects
        subprocess.run(cmd, check=True, capture_output=True)
        os.replace(tmp_out, out_path)


def plan(voices: list[Voice], sentences: list[str], per_speaker: int, seed: int) -> list[tuple[Voice, str, str]]:
    """(voice, text, relative path) jobs. Speakers with several engines split their sentences between them."""
    by_speaker: dict[str, list[Voice]] = {}
    for voice in voices:
        by_speaker.setdefault(voice.speaker, []).append(voice)
    jobs = []
    for speaker, speaker_voices in by_speaker.items():
        rng = random.Random(_seed(str(seed), speaker))
        texts = rng.sample(sentences, min(per_speaker, len(sentences)))
        for number, text in enumerate(texts):
            voice = speaker_voices[number % len(speaker_voices)]  # alternate engines of the same person
            engine_tag = f"{voice.engine}-{voice.voice}".replace("+", "_")
            jobs.append((voice, text, f"{speaker}/{speaker}_{number:03d}_{engine_tag}.wav"))
    return jobs


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech-dir", type=Path, default=here.parents[3].parent / "shared/data/speech",
                        help="bundled speech folder with manifest.csv (default: ../shared/data/speech from the repo)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for WAVs and manifest.csv")
    parser.add_argument("--per-speaker", type=int, default=30, help="sentences per synthetic speaker")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes")
    parser.add_argument("--sample-rate", type=int, default=16000,
                        help="output rate; 16000 matches the bundled real speech (see module docstring)")
    parser.add_argument("--min-words", type=int, default=5, help="shortest sentence used")
    parser.add_argument("--max-words", type=int, default=16, help="longest sentence used")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-speaker sentence draw")
    parser.add_argument("--max-speakers", type=int, default=None, help="use only the first N speakers (tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    voices = default_voices()
    if args.max_speakers:
        keep = list(dict.fromkeys(v.speaker for v in voices))[: args.max_speakers]
        voices = [v for v in voices if v.speaker in keep]
    check_tools(voices)
    sentences = read_sentences(args.speech_dir, args.min_words, args.max_words)
    jobs = plan(voices, sentences, args.per_speaker, args.seed)
    todo = [job for job in jobs if not (args.out / job[2]).exists()]
    logger.info("%d utterances planned for %d speakers; %d already exist, %d to make",
                len(jobs), len({j[0].speaker for j in jobs}), len(jobs) - len(todo), len(todo))

    failures = []

    def work(job):
        voice, text, rel = job
        try:
            synthesise(voice, text, args.out / rel, args.sample_rate)
        except subprocess.CalledProcessError as error:
            failures.append((rel, error.stderr.decode(errors="replace").strip()[-300:]))

    # Threads are enough: each job's work happens in the child processes (espeak/flite/festival/sox).
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for done, _ in enumerate(pool.map(work, todo), start=1):
            if done % 100 == 0:
                logger.info("%d / %d", done, len(todo))
    for rel, message in failures:
        logger.error("failed %s: %s", rel, message)

    rows = [(rel, voice.speaker, text, voice.engine, voice.voice) for voice, text, rel in jobs
            if (args.out / rel).exists()]
    tmp = args.out / "manifest.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker", "transcript", "engine", "voice"])
        writer.writerows(rows)
    os.replace(tmp, args.out / "manifest.csv")
    logger.info("wrote %s: %d utterances, %d speakers", args.out / "manifest.csv", len(rows),
                len({r[1] for r in rows}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
