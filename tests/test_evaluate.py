"""voiceconv evaluate end to end on synthetic voices: report files, sane judge scores, errors, independence.

"Converted" outputs are stand-ins with known answers: in set ``ideal`` the output is the target
speaker's own rendering of the source's vowels (the ground truth), so it must score like the
target; in set ``copy`` it is the source itself, so it must score like the source baseline.
The judge packages are optional (the [eval] extra): these tests skip without them.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_metrics import SR, vowel_utterance

from voiceconv.cli import main
from voiceconv.errors import VoiceconvError

pytest.importorskip("resemblyzer")
pytest.importorskip("pocketsphinx")
pytest.importorskip("pyworld")

# name -> (F0 Hz, formant scale): low male-like, high female-like, and one in between.
SPEAKERS = {"low": (100.0, 0.9), "high": (220.0, 1.25), "mid": (155.0, 1.07)}
# (source speaker, target speaker, vowels spoken by the source)
COMBOS = [("low", "high", "aeioua"), ("high", "mid", "uoeaie"), ("mid", "low", "iaouei")]


def _write(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SR, subtype="PCM_16")
    return path


def build_pairs(root: Path) -> tuple[Path, Path]:
    """Audio, pairs.csv and a folder of stand-in outputs; returns ``(pairs csv, converted dir)``."""
    rng = np.random.default_rng(0)
    refs = {}
    for s, (name, (f0, scale)) in enumerate(SPEAKERS.items()):
        refs[name] = [
            _write(root / "refs" / f"{name}_ref{k}.wav",
                   vowel_utterance(f0, scale, "".join(rng.choice(list("aeiou"), 6)), list(rng.uniform(0.2, 0.35, 6)),
                                   seed=10 * s + k))
            for k in range(2)
        ]
    converted = root / "converted"
    converted.mkdir()
    rows = []
    for k, (source_name, target_name, vowels) in enumerate(COMBOS):
        durations = list(rng.uniform(0.2, 0.35, len(vowels)))
        source = _write(root / "src" / f"{source_name}_{k}.wav",
                        vowel_utterance(*SPEAKERS[source_name], vowels, durations, seed=100 + k))
        truth = _write(root / "truth" / f"{target_name}_{k}.wav",
                       vowel_utterance(*SPEAKERS[target_name], vowels, durations, seed=200 + k))
        target = ";".join(str(path.relative_to(root)) for path in refs[target_name])
        for set_name, output in (("ideal", truth), ("copy", source)):
            name = f"{set_name}_{k}.wav"
            shutil.copy(output, converted / name)
            rows.append({
                "source": str(source.relative_to(root)), "target": target,
                "ground_truth": str(truth.relative_to(root)),
                # Half the pairs carry a (meaningless for vowels, but fixed) transcript, half use the source's ASR.
                "transcript": "a e i o u" if k % 2 == 0 else "", "set": set_name, "output": name,
            })
    pairs = root / "pairs.csv"
    with open(pairs, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return pairs, converted


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One CLI run shared by the report tests: ``(report dir, summary, pair rows, stdout)``."""
    root = tmp_path_factory.mktemp("evaluate")
    pairs, converted = build_pairs(root)
    probe = root / "probe.json"
    probe.write_text(json.dumps({"speaker_vector": {"accuracy": 0.97, "chance": 0.34},
                                 "content_mean": {"accuracy": 0.41, "chance": 0.34}}))
    out = root / "report"
    capture = root / "stdout.txt"
    saved = sys.stdout
    with open(capture, "w") as handle:
        sys.stdout = handle
        try:
            code = main(["evaluate", str(pairs), "--out", str(out), "--converted", str(converted),
                         "--probe", str(probe), "--quiet"])
        finally:
            sys.stdout = saved
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return out, summary, rows, capture.read_text()


def _value(row: dict, key: str) -> float:
    return float(row[key]) if row[key] != "" else math.nan


def test_report_files_exist_and_plots_are_real_images(evaluated):
    import matplotlib.image

    out, summary, rows, stdout = evaluated
    for name in ("pairs.csv", "summary.json", "report.md"):
        assert (out / name).stat().st_size > 0
    for name in ("similarity_hist.png", "similarity_vs_wer.png", "mel_examples.png"):
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas
    assert len(rows) == 2 * len(COMBOS)
    assert "evaluated 6 pairs" in stdout and "speaker similarity" in stdout


def test_report_states_judges_thresholds_sets_and_probe(evaluated):
    out, summary, rows, _ = evaluated
    text = (out / "report.md").read_text()
    threshold = summary["verification"]["threshold"]
    assert "Resemblyzer" in text and "pocketsphinx" in text and "WORLD" in text
    assert f"cosine >= {threshold:.4f}" in text
    assert "## Set: ideal" in text and "## Set: copy" in text
    assert "| speaker_vector / accuracy | 0.970 |" in text and "| content_mean / accuracy | 0.410 |" in text
    for plot in ("similarity_hist.png", "similarity_vs_wer.png", "mel_examples.png"):
        assert f"]({plot})" in text
    assert set(summary["sets"]) == {"ideal", "copy"}
    assert summary["judges"]["mel_cepstrum"].startswith("24 coefficients (c0 excluded)")


def test_verification_trials_separate_speakers(evaluated):
    _, summary, _, _ = evaluated
    check = summary["verification"]
    # 3 speakers x 2 reference clips: each clip against its speaker's other clip, and against 2 other speakers.
    assert check["genuine_trials"] == 6 and check["impostor_trials"] == 12
    assert check["genuine_mean"] > check["impostor_mean"] + 0.05
    assert 0.0 <= check["eer"] < 0.5
    assert check["impostor_mean"] < check["threshold"] < check["genuine_mean"]


def test_similarity_target_speech_scores_high_and_source_low(evaluated):
    _, summary, rows, _ = evaluated
    ideal, copy = summary["sets"]["ideal"], summary["sets"]["copy"]
    # The target's own speech (the ideal "conversion" and the ground truth) is far closer to the target than the source.
    assert ideal["similarity"]["output"] > ideal["similarity"]["source"] + 0.05
    assert ideal["similarity"]["output"] == pytest.approx(ideal["similarity"]["ground_truth"])
    assert copy["similarity"]["output"] == pytest.approx(copy["similarity"]["source"])
    assert ideal["acceptance"]["output"] > copy["acceptance"]["output"]
    assert ideal["acceptance"]["ground_truth"] >= 2 / 3
    for row in rows:
        assert row["accepted_output"] in ("0", "1")


def test_mcd_pitch_and_voicing_have_the_known_answers(evaluated):
    _, summary, rows, _ = evaluated
    for row in rows:
        source_speaker, target_speaker, _ = COMBOS[int(Path(row["output"]).stem.split("_")[1])]
        expected_source_gap = 12 * math.log2(SPEAKERS[source_speaker][0] / SPEAKERS[target_speaker][0])
        assert _value(row, "f0_gap_source_st") == pytest.approx(expected_source_gap, abs=0.5)
        assert _value(row, "mcd_source") > 3.0
        if row["set"] == "ideal":
            assert _value(row, "mcd_output") == 0.0  # the output is the ground truth file
            assert _value(row, "f0_gap_output_st") == pytest.approx(0.0, abs=0.5)
        else:
            assert _value(row, "mcd_output") == _value(row, "mcd_source")
            assert _value(row, "f0_gap_output_st") == _value(row, "f0_gap_source_st")
            assert _value(row, "voicing_agreement") == 1.0  # identical audio voices the same frames
    assert summary["sets"]["ideal"]["mcd_db"]["output"] == 0.0
    assert summary["sets"]["copy"]["mcd_db"]["output"] > 3.0


def test_wer_of_identical_audio_matches_the_source(evaluated):
    _, summary, rows, _ = evaluated
    for row in rows:
        assert row["asr_reference"] == ("transcript" if row["transcript"] else "source_asr")
        if row["set"] == "copy":
            assert row["hyp_output"] == row["hyp_source"]  # decoding is a function of the audio alone
            if row["asr_reference"] == "transcript":
                assert row["wer_output"] == row["wer_source"] != ""
            elif row["hyp_source"]:
                assert _value(row, "wer_output") == 0.0
    wer = summary["sets"]["copy"]["wer"]
    assert wer["output"] == wer["source"]
    assert summary["overall"]["rtf"]["median"] is None  # nothing was converted here


def test_evaluate_converts_with_a_model_and_times_it(tmp_path):
    from test_api import save_tiny_model

    from voiceconv.evaluation import evaluate

    pairs, _ = build_pairs(tmp_path / "data")
    model_dir, vocoder_dir = save_tiny_model(tmp_path / "model")
    # Two pairs keep it fast; the output names come from the CSV's output column.
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines[:3]) + "\n")
    summary = evaluate(pairs, tmp_path / "report", model=str(model_dir), vocoder=str(vocoder_dir), device="cpu",
                       progress=False)
    assert (tmp_path / "report" / "converted" / "ideal_0.wav").is_file()
    assert summary["overall"]["rtf"]["median"] > 0
    assert summary["conversion"]["model"] == str(model_dir)
    with open(tmp_path / "report" / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(float(row["rtf"]) > 0 and -1 <= float(row["sim_output"]) <= 1 for row in rows)
    # The reference rows: the same sources resynthesised and self-reconstructed, judged the same way.
    assert set(summary["stages"]) == {"resynthesis", "reconstruction", "conversion"}
    source = sf.info(str(pairs.parent / "src" / "low_0.wav"))
    for stage in ("resynthesis", "reconstruction"):
        # Both pairs share one source, so it is resynthesised and reconstructed once.
        files = sorted((tmp_path / "report" / "references" / stage).glob("*.wav"))
        assert len(files) == 1, files
        assert abs(sf.info(str(files[0])).duration - source.duration) < 0.05
        with open(tmp_path / "report" / f"pairs_{stage}.csv", newline="") as handle:
            stage_rows = list(csv.DictReader(handle))
        assert [Path(row["output"]).parent.name for row in stage_rows] == [stage, stage]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Where the loss happens" in report and "| resynthesis:" in report and "| reconstruction:" in report
    # Without a model there is nothing to make the rows with; --no-reference-rows skips them.
    summary = evaluate(pairs, tmp_path / "report2", model=str(model_dir), vocoder=str(vocoder_dir), device="cpu",
                       progress=False, reference_rows=False)
    assert "stages" not in summary and not (tmp_path / "report2" / "references").exists()


def test_bad_inputs_fail_with_a_fix(tmp_path, capsys):
    from voiceconv.evaluation import read_pairs
    from voiceconv.evaluation.pairs import resolve_outputs

    bad = tmp_path / "bad.csv"
    bad.write_text("src,target\na.wav,b.wav\n")
    with pytest.raises(VoiceconvError, match="source,target"):
        read_pairs(bad)
    bad.write_text("source,target\nmissing.wav,b.wav\n")
    with pytest.raises(VoiceconvError, match="missing.wav not found"):
        read_pairs(bad)
    pairs, converted = build_pairs(tmp_path / "data")
    (converted / "copy_1.wav").unlink()
    with pytest.raises(VoiceconvError, match="1 converted files not found.*copy_1.wav"):
        resolve_outputs(read_pairs(pairs), converted)
    code = main(["evaluate", str(pairs), "--out", str(tmp_path / "r"), "--converted", str(converted),
                 "--vocoder", "x"])
    assert code == 2 and "add --model" in capsys.readouterr().err


def test_pairs_without_output_column_find_batch_named_files(tmp_path):
    from voiceconv.evaluation import read_pairs
    from voiceconv.evaluation.pairs import resolve_outputs

    for name in ("a.wav", "b.wav", "c.wav"):
        _write(tmp_path / name, vowel_utterance(120, 1.0, "ai", [0.2, 0.2]))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("source,target,set\na.wav,b.wav|c.wav,unseen\nb.wav,a.wav,\n", encoding="utf-8-sig")
    rows = read_pairs(pairs)
    assert [row.targets for row in rows] == [[tmp_path / "b.wav", tmp_path / "c.wav"], [tmp_path / "a.wav"]]
    assert [row.set for row in rows] == ["unseen", "all"]
    assert rows[0].target_speaker != rows[1].target_speaker
    converted = tmp_path / "converted"
    converted.mkdir()
    for name in ("00000_a.wav", "00001_b.wav"):  # the names `voiceconv batch` gives rows without an output
        shutil.copy(tmp_path / "a.wav", converted / name)
    assert resolve_outputs(rows, converted) == {0: converted / "00000_a.wav", 1: converted / "00001_b.wav"}
    pairs.write_text("source,target\na.wav,voice.spk\n")
    with pytest.raises(VoiceconvError, match="reference audio"):
        read_pairs(pairs)


def test_reference_lists_sharing_a_clip_are_one_speaker():
    from voiceconv.evaluation.evaluator import speaker_clips
    from voiceconv.evaluation.pairs import Pair

    a, b, c, d, e = (Path(f"{name}.wav") for name in "abcde")
    pairs = [Pair(0, a, [a, b], "a;b"), Pair(1, a, [b, c], "b;c"), Pair(2, a, [d], "d"), Pair(3, a, [c, e], "X")]
    assert speaker_clips(pairs) == {"a;b": [a, b, c, e], "d": [d]}


def test_missing_judge_names_the_install_command(monkeypatch):
    from voiceconv.evaluation.judges import AsrJudge, JudgeMissingError

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # makes `import pocketsphinx` raise ImportError
    with pytest.raises(JudgeMissingError, match=r"pip install --no-deps resemblyzer==0\.1\.4"):
        AsrJudge()


def test_training_code_never_imports_the_judges():
    package = Path(__file__).resolve().parent.parent / "voiceconv"
    # The whole training layer, the models, the vocoder and the converter (convert/pitch.py uses pyworld
    # for F0 on purpose: pitch handling at conversion time, not training or selection).
    training = [*(package / "training").glob("*.py"), *(package / "models").glob("*.py"),
                *(package / "vocoder").glob("*.py"), package / "convert" / "converter.py"]
    checked = 0
    for path in training:
        text = path.read_text()
        checked += 1
        for name in ("voiceconv.evaluation", "resemblyzer", "pocketsphinx", "pyworld"):
            assert name not in text, f"{path.name} mentions {name}: the judges must stay independent of training"
    assert checked >= 25
