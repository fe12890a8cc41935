"""The VCTK recipe on a fake corpus: layout handling of local/prepare_vctk.py, and run.sh end to end.

The fake tree has the real release-0.92 layout (``wav48_silence_trimmed/pXXX/pXXX_NNN_mic1.flac``,
``txt/pXXX/pXXX_NNN.txt``) with synthetic harmonic voices, and uses speaker ids from the committed
splits, so the unseen-speaker list, the validation rule and the eval-pair resolution all act on it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from helpers import synthetic_voice

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "vctk"
sys.path.insert(0, str(RECIPE / "local"))

import prepare_vctk  # noqa: E402  (recipe script, imported from its folder)

# p294 -> p341 is committed unseen pair 000 (source p294_002); p268 -> p277 is seen pair 041 (source p268_020).
# p227 and p232 are extra seen speakers so the trainer can hold one out for validation and still train on 3+.
SPEAKERS = {
    "p294": (210.0, (850.0, 1500.0, 2900.0)),
    "p341": (240.0, (900.0, 1700.0, 3100.0)),
    "p268": (190.0, (800.0, 1400.0, 2800.0)),
    "p277": (225.0, (950.0, 1600.0, 3000.0)),
    "p227": (110.0, (600.0, 1100.0, 2400.0)),
    "p232": (130.0, (650.0, 1200.0, 2500.0)),
}
NUMBERS = [2, 12, 14, 20, 24, 25, 26, 27, 28]  # shared sentences 002-024, own sentences 025+
MISSING = {"p341_026"}  # a reference the resolver must replace with the next existing number (028)


def text_for(speaker: str, number: int) -> str:
    # 001-024 are read by everyone (parallel); later numbers are each speaker's own sentences.
    return f"Shared sentence number {number}." if number <= 24 else f"{speaker} reads his own line {number}."


def make_fake_vctk(root: Path, layout: str = "0.92", seconds: float = 0.8) -> Path:
    for index, (speaker, (f0, formants)) in enumerate(SPEAKERS.items()):
        for number in NUMBERS:
            utterance = f"{speaker}_{number:03d}"
            if utterance in MISSING:
                continue
            audio = synthetic_voice(f0, formants, seconds=seconds, sr=48000, seed=index * 100 + number)
            (root / "txt" / speaker).mkdir(parents=True, exist_ok=True)
            (root / "txt" / speaker / f"{utterance}.txt").write_text(text_for(speaker, number) + "\n")
            if layout == "0.92":
                folder = root / "wav48_silence_trimmed" / speaker
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"{utterance}_mic1.flac", audio, 48000, subtype="PCM_16")
                if speaker != "p232":  # p232 has mic1 only, like p280/p362 in the real 0.92
                    sf.write(folder / f"{utterance}_mic2.flac", 0.5 * audio, 48000, subtype="PCM_16")
            else:
                folder = root / "wav48" / speaker
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"{utterance}.wav", audio, 48000, subtype="PCM_16")
    return root


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("layout", ["0.92", "0.80"])
def test_prepare_vctk_layouts_splits_and_pairs(tmp_path, layout):
    corpus = make_fake_vctk(tmp_path / "VCTK", layout, seconds=0.1)
    out = tmp_path / "data"
    assert prepare_vctk.main(["--corpus", str(corpus), "--out", str(out)]) == 0
    train, valid, unseen = (read_rows(out / f"{part}.csv") for part in ("train", "valid", "unseen"))
    # Unseen speakers are out of training entirely; 001-024 of seen speakers are validation only.
    assert {r["speaker"] for r in unseen} == {"p294", "p341"}
    assert {r["speaker"] for r in train} == {"p268", "p277", "p227", "p232"}
    assert all(int(Path(r["path"]).stem.split("_")[1]) >= 25 for r in train)
    assert all(int(Path(r["path"]).stem.split("_")[1]) <= 24 for r in valid)
    assert len(train) + len(valid) + len(unseen) == len(SPEAKERS) * len(NUMBERS) - len(MISSING)
    suffix = "_mic1.flac" if layout == "0.92" else ".wav"
    assert all(r["path"].endswith(suffix) for r in train + valid + unseen)
    assert train[0]["transcript"].endswith("own line 25.")

    pairs = read_rows(out / "eval_pairs.csv")
    by_output = {p["output"]: p for p in pairs}
    assert len(pairs) == 2  # only the committed pairs whose speakers are all in the fake tree survive
    unseen_pair = by_output["000_unseen_FF_p294_002_to_p341.wav"]
    refs = [Path(ref).stem.split("_mic")[0] for ref in unseen_pair["target"].split(";")]
    assert refs == ["p341_025", "p341_027", "p341_028"]  # 026 is missing: the next existing numbers step in
    assert Path(unseen_pair["ground_truth"]).stem.startswith("p341_002")  # same sentence, by text
    assert unseen_pair["transcript"] == "Shared sentence number 2."
    assert unseen_pair["set"] == "unseen"
    seen_pair = next(p for p in pairs if p["set"] == "seen")
    assert Path(seen_pair["source"]).stem.startswith("p268_020")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == layout and summary["eval_pairs_with_ground_truth"] == 2


def test_prepare_vctk_mic2_falls_back_to_mic1(tmp_path):
    corpus = make_fake_vctk(tmp_path / "VCTK", "0.92", seconds=0.1)
    out = tmp_path / "data"
    assert prepare_vctk.main(["--corpus", str(corpus), "--out", str(out), "--mic", "mic2"]) == 0
    rows = read_rows(out / "train.csv")
    assert all(r["path"].endswith("_mic2.flac") for r in rows if r["speaker"] != "p232")
    assert all(r["path"].endswith("_mic1.flac") for r in rows if r["speaker"] == "p232")  # no mic2 files


def test_prepare_vctk_explains_a_missing_corpus(tmp_path):
    (tmp_path / "empty" / "txt").mkdir(parents=True)
    with pytest.raises(SystemExit, match="datashare.ed.ac.uk"):
        prepare_vctk.main(["--corpus", str(tmp_path / "empty"), "--out", str(tmp_path / "data")])


def run_recipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this venv's voiceconv and python
    return subprocess.run(["bash", str(RECIPE / "run.sh"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_run_sh_end_to_end_and_resume(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    corpus = make_fake_vctk(tmp_path / "VCTK-Corpus-0.92", "0.92")
    exp = tmp_path / "exp"
    # --conf relative to the recipe folder, --corpus/--exp relative to the caller's folder.
    result = run_recipe("--conf", "conf/debug.yaml", "--corpus", "VCTK-Corpus-0.92", "--exp", "exp", "--nj", "1",
                        "--device", "cpu", "--stage", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for n in range(1, 7):
        assert f"=== stage {n} done" in result.stdout
        log = exp / "logs" / (f"stage{n}_debug.log" if n >= 4 else f"stage{n}.log")
        assert log.is_file() and log.stat().st_size > 0
    assert (exp / "data" / "prepared" / "meta.json").is_file()
    assert (exp / "vocoder" / "last").is_dir()  # stage 3
    assert (exp / "debug" / "last").is_dir()  # stage 4
    converted = sorted((exp / "debug" / "converted").glob("*.wav"))  # stage 5
    assert [p.name for p in converted] == sorted(p["output"] for p in read_rows(exp / "data" / "eval_pairs.csv"))
    for path in converted:
        audio, rate = sf.read(path)
        assert rate > 0 and len(audio) > 0.5 * rate and abs(audio).max() > 1e-3  # real audio, not silence
    summary = json.loads((exp / "debug" / "eval" / "summary.json").read_text())  # stage 6
    assert summary["overall"]["pairs"] == 2
    assert set(summary["sets"]) == {"seen", "unseen"}
    assert corpus.is_dir()

    # Resume from stage 5 after losing the outputs: the trained models are reused, nothing retrains.
    shutil.rmtree(exp / "debug" / "converted")
    shutil.rmtree(exp / "debug" / "eval")
    model_mtime = (exp / "debug" / "last").stat().st_mtime
    result = run_recipe("--conf", "conf/debug.yaml", "--exp", str(exp), "--stage", "5", "--device", "cpu",
                        cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "=== stage 4" not in result.stdout and "=== stage 6 done" in result.stdout
    assert len(list((exp / "debug" / "converted").glob("*.wav"))) == 2
    assert (exp / "debug" / "eval" / "report.md").is_file()
    assert (exp / "debug" / "last").stat().st_mtime == model_mtime


def test_run_sh_stage0_says_where_to_get_vctk(tmp_path):
    result = run_recipe("--stage", "0", "--stop-stage", "0", "--corpus", str(tmp_path / "nowhere"), "--exp",
                        str(tmp_path / "exp"), cwd=tmp_path)
    assert result.returncode != 0
    assert "https://datashare.ed.ac.uk/handle/10283/3443" in result.stdout
    assert "VCTK-Corpus-0.92.zip" in result.stdout and "VCTK-Corpus.tar.gz" in result.stdout
    assert (tmp_path / "exp" / "logs" / "stage0.log").is_file()
