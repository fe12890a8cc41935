"""The mini recipe's data scripts on a fake bundled-speech folder (no /work/shared, no TTS needed)."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import synthetic_voice

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "mini" / "local"))

import make_manifest  # noqa: E402  (recipe script, imported from its folder)
import make_synthetic  # noqa: E402

FIELDS = ["path", "dataset", "speaker", "utterance_id", "transcript", "gender", "duration_s"]


def make_fake_speech(root: Path, n_per_gender: int = 12) -> Path:
    """A folder shaped like the bundled speech: LibriSpeech-like speakers with one file each, plus Kathleen."""
    rows = []
    for index in range(2 * n_per_gender):
        gender = "F" if index % 2 else "M"
        speaker = str(100 + index)
        # One long speaker-file with a pause in the middle third, like a read LibriSpeech sentence pair.
        seconds = 12.0 if index != 0 else 6.0  # speaker 100 is too short to be drawn as unseen
        audio = synthetic_voice(150 + 5 * index, seconds=seconds, sr=16000, seed=index)
        audio[int(len(audio) * 0.36) : int(len(audio) * 0.38)] = 0.0
        path = f"librispeech/{speaker}_1-0000.flac"
        (root / "librispeech").mkdir(parents=True, exist_ok=True)
        sf.write(root / path, audio, 16000)
        rows.append([path, "librispeech", speaker, "1-0000", "", gender, f"{seconds:.3f}"])
    for number in range(3):
        path = f"kathleen/kathleen_a{number:04d}.flac"
        (root / "kathleen").mkdir(parents=True, exist_ok=True)
        sf.write(root / path, synthetic_voice(200, seconds=1.0, sr=16000, seed=50 + number), 16000)
        rows.append([path, "kathleen", "kathleen", f"a{number:04d}", f"Kathleen sentence number {number} here.",
                     "F", "1.000"])
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        writer.writerows(rows)
    return root


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_make_manifest_holds_out_balanced_speakers_and_cuts_clips(tmp_path):
    speech = make_fake_speech(tmp_path / "speech")
    data, splits = tmp_path / "data", tmp_path / "splits"
    args = ["--speech-dir", str(speech), "--data-dir", str(data), "--splits-dir", str(splits), "--per-gender", "4"]
    assert make_manifest.main(args) == 0
    unseen = make_manifest.read_unseen(splits / "unseen_speakers.txt")
    assert sorted(g for _, g in unseen) == ["F"] * 4 + ["M"] * 4
    assert "100" not in {s for s, _ in unseen}  # too short for three ~4 s clips
    train = read_rows(data / "train.csv")
    trained = {r["speaker"] for r in train}
    assert not trained & {f"libri_{s}" for s, _ in unseen}
    assert len(trained) == 24 - 8 + 1  # the other LibriSpeech speakers plus Kathleen
    assert len(read_rows(data / "unseen.csv")) == 8

    pairs = read_rows(data / "eval_pairs.csv")
    assert (data / "eval_pairs.csv").read_text() == (splits / "eval_pairs.csv").read_text()
    assert len(pairs) == 40
    assert sorted({p["output"].split("_")[1] for p in pairs}) == ["FF", "FM", "MF", "MM"]
    for pair in pairs:
        refs = pair["target"].split(";")
        assert len(refs) == 3 and pair["target_speaker"] == f"libri_{Path(refs[0]).parent.name}"
        assert Path(pair["source"]).parent.name != Path(refs[0]).parent.name  # never converts to itself
        for clip in [pair["source"], *refs]:
            info = sf.info(data / clip)
            assert 2.5 < info.duration < 6.0  # thirds of 12 s, moved to a pause within +-1 s
    # Resumable and stable: a second run with the committed splits writes the same files.
    before = (data / "train.csv").read_text()
    assert make_manifest.main(args) == 0
    assert (data / "train.csv").read_text() == before


def test_clip_cuts_land_in_pauses():
    audio = np.ones(16000 * 12, np.float32)
    audio[16000 * 4 + 4000 : 16000 * 4 + 6000] = 0.0  # a 125 ms pause 0.25-0.375 s after the first third
    first, _ = make_manifest.split_points(audio, 16000, 3)
    assert 16000 * 4 + 4000 <= first <= 16000 * 4 + 6000


def test_synthetic_plan_is_deterministic_and_labels_people_not_engines():
    voices = make_synthetic.default_voices()
    sentences = [f"Sentence {i} has several words in it." for i in range(100)]
    plan = make_synthetic.plan(voices, sentences, 6, seed=0)
    assert plan == make_synthetic.plan(voices, sentences, 6, seed=0)
    speakers = {voice.speaker for voice, _, _ in plan}
    assert len(speakers) >= 25 and len(plan) == 6 * len(speakers)
    # flite kal16 and festival kal_diphone are the same recorded person: one label, both engines used.
    kal_engines = {voice.engine for voice, _, _ in plan if voice.speaker == "syn_kal"}
    assert kal_engines == {"flite", "festival"}
    assert len({rel for _, _, rel in plan}) == len(plan)


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="needs the Debian packages espeak-ng and sox")
def test_make_synthetic_writes_16k_wavs_and_resumes(tmp_path):
    speech = make_fake_speech(tmp_path / "speech", n_per_gender=1)
    out = tmp_path / "syn"
    args = ["--speech-dir", str(speech), "--out", str(out), "--per-speaker", "2", "--max-speakers", "2",
            "--min-words", "3"]
    assert make_synthetic.main(args) == 0
    rows = read_rows(out / "manifest.csv")
    assert len(rows) == 4 and {r["speaker"] for r in rows} == {"syn_espeak_m1", "syn_espeak_m2"}
    for row in rows:
        audio, rate = sf.read(out / row["path"])
        assert rate == 16000 and len(audio) > 8000 and 0.5 < np.abs(audio).max() <= 1.0  # -3 dBFS peak
    mtimes = {row["path"]: (out / row["path"]).stat().st_mtime_ns for row in rows}
    assert make_synthetic.main(args) == 0  # nothing to redo
    assert mtimes == {row["path"]: (out / row["path"]).stat().st_mtime_ns for row in read_rows(out / "manifest.csv")}
