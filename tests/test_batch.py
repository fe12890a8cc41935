"""voiceconv batch: SIGKILL-safe resume, shards, and bad rows that fail alone (issue 5 acceptance 3 and 4)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import synthetic_voice
from test_api import SR, save_tiny_model, tiny_converter, write_voice

from voiceconv.cli import main as cli_main
from voiceconv.convert.batch import run_batch
from voiceconv.convert.batch_rows import BatchError, read_pairs, resolve_shard, safe_output_path
from voiceconv.errors import VoiceconvError


def make_pairs(directory: Path, n: int) -> Path:
    """``n`` short sources against three two-clip target voices; returns the CSV (relative paths)."""
    voices = [(200, (800.0, 1300.0, 2800.0)), (95, (600.0, 1000.0, 2400.0)), (160, (700.0, 1600.0, 2900.0))]
    for v, (f0, formants) in enumerate(voices):
        for k in range(2):
            write_voice(directory / "refs" / f"v{v}_{k}.wav", f0, 0.7, seed=10 * v + k, formants=formants)
    rows = []
    for i in range(n):
        write_voice(directory / "src" / f"s{i:02d}.wav", 110 + i, 0.3 + 0.01 * (i % 7), seed=100 + i)
        rows.append((f"src/s{i:02d}.wav", f"refs/v{i % 3}_0.wav;refs/v{i % 3}_1.wav"))
    path = directory / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "target"])
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("batch_models"))


@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_killed_batch_completes_on_rerun(tmp_path, models, jobs):
    """Acceptance 3: SIGKILL midway, run again: all 50 outputs valid, none converted twice."""
    pairs = make_pairs(tmp_path, 50)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "voiceconv.cli", "batch", str(pairs), "--out-dir", str(out), "--model",
               str(models[0].parent), "--quiet", "--jobs", str(jobs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    journal = out / "batch_status.journal.csv"
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count(",ok,") >= 5:
            break
        time.sleep(0.02)
    assert process.poll() is None, f"batch ended before it could be killed: {process.stderr.read().decode()}"
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, as a scheduler would
    process.wait()
    first = [r for r in read_csv(journal) if r["status"] == "ok"]
    assert 5 <= len(first) < 50
    assert not (out / "batch_status.csv").exists()  # the killed run never wrote its report

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = read_csv(out / "batch_status.csv")
    assert len(report) == 50 and {r["status"] for r in report} <= {"ok", "skipped"}
    entries = read_csv(journal)
    converted = Counter(int(r["row"]) for r in entries if r["status"] == "ok")
    assert max(converted.values()) == 1  # no row converted twice
    skipped = {int(r["row"]) for r in report if r["status"] == "skipped"}
    assert {int(r["row"]) for r in first} <= skipped
    assert set(converted) | skipped == set(range(50))
    for row in read_pairs(pairs, out):
        audio, rate = sf.read(row.output_path, dtype="float32")
        assert rate == SR and audio.size == sf.info(row.source_path).frames and np.isfinite(audio).all()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_two_shards_cover_the_list_exactly(tmp_path):
    pairs = make_pairs(tmp_path, 9)
    vc = tiny_converter()
    done = {}
    for k in range(2):
        summary = run_batch(pairs, tmp_path / "out", converter=vc, shard=(k, 2), pitch=None, progress=False)
        assert summary.failed == 0 and summary.report_path.name == f"batch_status.shard{k}of2.csv"
        done[k] = {r.row for r in summary.results if r.status == "ok"}
        assert all(i % 2 == k for i in done[k])
    assert done[0] | done[1] == set(range(9)) and not done[0] & done[1]
    assert len(list((tmp_path / "out").glob("*.wav"))) == 9


def test_shard_from_arguments_and_environment():
    assert resolve_shard("1/4", {}) == (1, 4)
    assert resolve_shard(None, {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    assert resolve_shard(None, {"SLURM_PROCID": "0", "SLURM_NTASKS": "5"}) == (0, 5)
    assert resolve_shard("0/2", {"RANK": "1", "WORLD_SIZE": "3"}) == (0, 2)  # the flag wins
    assert resolve_shard(None, {}) == (0, 1)
    for bad in ("3/3", "1-2", "-1/2"):
        with pytest.raises(BatchError):
            resolve_shard(bad, {})


def test_bad_rows_fail_alone_with_clear_reasons(tmp_path, models, capsys):
    """Acceptance 4: missing, corrupt, silent, 0.1 s and escaping rows fail; the others convert."""
    write_voice(tmp_path / "good.wav", 120, 0.6)
    write_voice(tmp_path / "ref.wav", 210, 0.8, seed=1)
    write_voice(tmp_path / "short.wav", 120, 0.1)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(300))
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(outside)
    rows = [
        ("good.wav", "ref.wav", "", "ok"),
        ("missing.wav", "ref.wav", "", "file not found"),
        ("corrupt.wav", "ref.wav", "", "not a readable audio file"),
        ("silent.wav", "ref.wav", "", "silent"),
        ("short.wav", "ref.wav", "", "conversion needs at least 250 ms"),
        ("good.wav", "short.wav", "short_target.wav", "a reference needs at least 0.5 s"),
        ("good.wav", "ref.wav", "../up.wav", "contains '..'"),
        ("good.wav", "ref.wav", str(tmp_path / "abs.wav"), "absolute path"),
        ("good.wav", "ref.wav", "link/escaped.wav", "escapes --out-dir through a symlink"),
        ("good.wav", "ref.wav|ref.wav", "named/second.flac", "ok"),
    ]
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "target", "output"])
        writer.writerows(row[:3] for row in rows)
    code = cli_main(["batch", str(pairs), "--out-dir", str(tmp_path / "out"), "--model", str(models[0]),
                     "--vocoder", str(models[1]), "--quiet"])
    assert code == 1
    report = read_csv(tmp_path / "out" / "batch_status.csv")
    stderr = capsys.readouterr().err
    for (_, _, _, expected), line in zip(rows, report):
        if expected == "ok":
            assert line["status"] == "ok", line
        else:
            assert line["status"] == "failed" and expected in line["reason"], line
            assert f"row {line['row']} " in stderr and expected in stderr
    assert sf.info(tmp_path / "out" / "named" / "second.flac").frames == sf.info(tmp_path / "good.wav").frames
    assert not list(outside.iterdir()) and not (tmp_path / "up.wav").exists() and not (tmp_path / "abs.wav").exists()


def test_pairs_file_errors_and_output_names(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("src,tgt\na.wav,b.wav\n")
    with pytest.raises(BatchError, match="missing column"):
        read_pairs(bad, tmp_path)
    bad.write_text("source,target\n")
    with pytest.raises(BatchError, match="no rows"):
        read_pairs(bad, tmp_path)
    duplicate = tmp_path / "dup.csv"
    duplicate.write_text("source,target,output\na.wav,b.wav,x.wav\nc.wav,d.wav,x\n")
    rows = read_pairs(duplicate, tmp_path / "out")
    assert rows[0].error is None and "also the output of row 0" in rows[1].error
    assert safe_output_path(tmp_path, "sub/name").name == "name.wav"
    with pytest.raises(VoiceconvError, match="extension"):
        safe_output_path(tmp_path, "x.txt")


def test_rerun_refuses_a_foreign_file_in_place_of_an_output(tmp_path):
    pairs = make_pairs(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    sf.write(out / "00000_s00.wav", synthetic_voice(100, seconds=2.0), SR)  # wrong length: not our output
    summary = run_batch(pairs, out, converter=tiny_converter(), pitch=None, progress=False)
    statuses = [r.status for r in summary.results]
    assert statuses == ["failed", "ok"] and "--overwrite" in summary.results[0].reason
    summary = run_batch(pairs, out, converter=tiny_converter(), pitch=None, progress=False, overwrite=True)
    assert [r.status for r in summary.results] == ["ok", "ok"]
