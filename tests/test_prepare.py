"""`voiceconv prepare` (resumable feature cache), PreparedCorpus and the SegmentBatcher."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import synthetic_voice, write_corpus

from voiceconv.audio import load_audio, trim_silence
from voiceconv.cli import main
from voiceconv.errors import VoiceconvError
from voiceconv.features import MelConfig, MelSpectrogram
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.prepare import ManifestRow, prepare, read_manifest, write_manifest

SR = 22050


def _add_corrupt(manifest: Path) -> Path:
    """A truncated WAV (header only) among the good files; returns its path."""
    bad = manifest.parent / "low" / "broken.wav"
    bad.write_bytes((manifest.parent / "low" / "low_0.wav").read_bytes()[:30])
    rows = read_manifest(manifest)
    rows.insert(2, ManifestRow(str(bad), "low", "broken"))
    write_manifest(manifest, rows)
    return bad


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_prepare_reports_corrupt_file_and_finishes(corpus_manifest, tmp_path):
    bad = _add_corrupt(corpus_manifest)
    out = tmp_path / "prepared"
    summary = prepare(corpus_manifest, out, workers=1, progress=False, shard_size=3)
    assert summary.utterances == 6 and summary.speakers == 2
    assert [item["path"] for item in summary.skipped] == [str(bad)]
    assert str(bad) in summary.skipped[0]["reason"] and "not a readable audio file" in summary.skipped[0]["reason"]
    skipped = _read_csv(out / "skipped.csv")
    assert [row["path"] for row in skipped] == [str(bad)] and "\n" not in skipped[0]["reason"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["utterances"] == 6 and meta["skipped"] == 1 and MelConfig.from_dict(meta["mel"]) == MelConfig()
    index = _read_csv(out / "index.csv")
    assert [row["speaker"] for row in index] == ["low"] * 3 + ["high"] * 3
    mels = np.load(out / "mels.npy")
    assert mels.dtype == np.float16 and mels.shape == (sum(int(r["n_frames"]) for r in index), 80)
    audio = np.load(out / "audio.npy")
    assert audio.dtype == np.int16 and len(audio) == sum(int(r["n_frames"]) * 256 for r in index)


def test_prepared_mels_match_the_front_end(corpus_manifest, tmp_path):
    """What the cache holds is the log-mel of the (trimmed) file, to float16 precision."""
    out = tmp_path / "prepared"
    prepare(corpus_manifest, out, workers=1, progress=False)
    corpus = PreparedCorpus(out)
    mel_fn = MelSpectrogram(corpus.mel_config)
    for i, utterance in enumerate(corpus.utterances):
        audio = trim_silence(load_audio(utterance.path, SR), SR)
        audio = audio[: len(audio) // 256 * 256]
        expected = mel_fn(torch.from_numpy(audio)).numpy()
        cached = corpus.mel(i)
        assert cached.shape == expected.shape == (80, utterance.n_frames) and cached.dtype == np.float32
        assert np.abs(cached - expected).max() < 0.01  # float16 steps are <= 0.008 at |log-mel| < 16
        np.testing.assert_allclose(corpus.audio(i), audio, atol=1 / 32767 + 1e-7)
        np.testing.assert_array_equal(corpus.mel(i, 3, 5), cached[:, 3:8])
        np.testing.assert_array_equal(corpus.audio(i, 3, 5), corpus.audio(i)[3 * 256 : 8 * 256])


def test_prepare_cli_prints_summary_with_the_corrupt_file(corpus_manifest, tmp_path, capsys):
    bad = _add_corrupt(corpus_manifest)
    out = tmp_path / "prepared"
    assert main(["prepare", str(corpus_manifest), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "prepared 6 utterances from 2 speakers" in printed
    assert "skipped 1 unreadable files" in printed and str(bad) in printed
    # The re-run reuses everything and reports the same skipped file.
    assert main(["prepare", str(corpus_manifest), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "reused 1 finished shards, computed 0" in printed and str(bad) in printed


def test_prepare_with_only_bad_files_fails_and_lists_them(tmp_path, capsys):
    (tmp_path / "a.wav").write_text("not audio")
    write_manifest(tmp_path / "m.csv", [ManifestRow("a.wav", "s"), ManifestRow("missing.wav", "s")])
    with pytest.raises(VoiceconvError, match=r"no usable audio: all 2 files failed .*skipped.csv.*a.wav"):
        prepare(tmp_path / "m.csv", tmp_path / "out", workers=1, progress=False)
    assert len(_read_csv(tmp_path / "out" / "skipped.csv")) == 2
    assert main(["prepare", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("voiceconv prepare: error: no usable audio") and error.count("\n") == 1


def test_prepare_honours_mel_config_from_yaml(corpus_manifest, tmp_path, capsys):
    config = tmp_path / "mel.yaml"
    config.write_text("model:\n  mel:\n    sample_rate: 16000\n    n_fft: 512\n    hop_length: 128\n"
                      "    win_length: 512\n    n_mels: 40\n")
    out = tmp_path / "prepared"
    assert main(["prepare", str(corpus_manifest), "--out", str(out), "--config", str(config), "--quiet"]) == 0
    corpus = PreparedCorpus(out)
    assert corpus.mel_config.n_mels == 40 and corpus.mel(0).shape[0] == 40
    assert corpus.audio(0).shape == (corpus.utterances[0].n_frames * 128,)
    config.write_text("mel:\n  hop_size: 128\n")
    assert main(["prepare", str(corpus_manifest), "--out", str(out), "--config", str(config), "--quiet"]) == 2
    assert "unknown key 'mel.hop_size' (did you mean 'mel.hop_length'?)" in capsys.readouterr().err


def _big_corpus(directory: Path, n: int = 48) -> Path:
    directory.mkdir(parents=True)
    rows = []
    for i in range(n):
        path = directory / f"u{i:03d}.wav"
        sf.write(path, synthetic_voice(100 + 5 * i, seconds=0.4, seed=i), SR, subtype="PCM_16")
        rows.append(ManifestRow(path.name, f"spk{i % 4}"))
    write_manifest(directory / "manifest.csv", rows)
    return directory / "manifest.csv"


def _assert_same_cache(a: Path, b: Path) -> None:
    assert (a / "index.csv").read_text() == (b / "index.csv").read_text()
    np.testing.assert_array_equal(np.load(a / "mels.npy"), np.load(b / "mels.npy"))
    np.testing.assert_array_equal(np.load(a / "audio.npy"), np.load(b / "audio.npy"))
    assert (a / "skipped.csv").read_text() == (b / "skipped.csv").read_text()


@pytest.mark.slow
def test_killed_prepare_resumes_without_redoing_finished_shards(tmp_path):
    manifest = _big_corpus(tmp_path / "corpus")
    shard_size, n_shards = 2, 24
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "voiceconv.cli", "prepare", str(manifest), "--out", str(killed),
               "--shard-size", str(shard_size), "--workers", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Its own process group, so SIGKILL reaches it and any worker it started: a hard kill, no cleanup.
    process = subprocess.Popen(command, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    def finished_shards():
        # A shard being written is "shard_..._KEY.npz.tmp.npz", which the pattern also matches: exclude it,
        # or the kill can land before any shard is complete (seen as a flaky failure on an idle machine).
        return [p for p in (killed / "shards").glob("shard_*.npz") if not p.name.endswith(".tmp.npz")]

    while not finished_shards():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "prepare never wrote a shard"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    finished = len(finished_shards())
    assert 0 < finished < n_shards, f"the kill came too late to test resumption ({finished} shards done)"
    assert not (killed / "meta.json").exists()  # an interrupted cache does not look complete
    (killed / "shards" / "shard_00023_0123456789abcdef.npz.tmp.npz").write_bytes(b"half a shard")

    summary = prepare(manifest, killed, workers=1, progress=False, shard_size=shard_size)
    assert summary.reused_shards == finished > 0
    assert summary.computed_shards == n_shards - finished
    assert not list((killed / "shards").glob("*.tmp.npz"))  # a killed writer's leftovers are cleared

    uninterrupted = tmp_path / "uninterrupted"
    reference = prepare(manifest, uninterrupted, workers=1, progress=False, shard_size=shard_size)
    assert (reference.utterances, reference.reused_shards) == (48, 0)
    _assert_same_cache(killed, uninterrupted)


@pytest.mark.slow
def test_parallel_workers_give_the_same_cache(tmp_path):
    manifest = _big_corpus(tmp_path / "corpus", n=8)
    serial = prepare(manifest, tmp_path / "serial", workers=1, progress=False, shard_size=2)
    parallel = prepare(manifest, tmp_path / "parallel", workers=2, progress=False, shard_size=2)
    assert serial.computed_shards == parallel.computed_shards == 4
    _assert_same_cache(tmp_path / "serial", tmp_path / "parallel")


def test_changed_inputs_recompute_only_what_changed(corpus_manifest, tmp_path):
    out = tmp_path / "prepared"
    first = prepare(corpus_manifest, out, workers=1, progress=False, shard_size=2)
    assert (first.reused_shards, first.computed_shards) == (0, 3)
    # Replace one file's audio: only its shard is recomputed, and the cache follows the new audio.
    changed = corpus_manifest.parent / "high" / "high_2.wav"
    sf.write(changed, synthetic_voice(300, seconds=0.5, seed=9), SR, subtype="PCM_16")
    second = prepare(corpus_manifest, out, workers=1, progress=False, shard_size=2)
    assert (second.reused_shards, second.computed_shards) == (2, 1)
    assert PreparedCorpus(out).utterances[5].n_frames == len(trim_silence(load_audio(changed, SR), SR)) // 256
    assert len(list((out / "shards").glob("shard_*.npz"))) == 3  # the stale shard was removed
    # Another mel config (or trimming choice) shares nothing.
    third = prepare(corpus_manifest, out, MelConfig(n_mels=40), workers=1, progress=False, shard_size=2)
    assert (third.reused_shards, third.computed_shards) == (0, 3)
    assert PreparedCorpus(out).mel(0).shape[0] == 40
    fourth = prepare(corpus_manifest, out, MelConfig(n_mels=40), workers=1, progress=False, shard_size=2, trim=False)
    assert fourth.computed_shards == 3
    untrimmed = PreparedCorpus(out).utterances[0]
    assert untrimmed.n_frames == len(load_audio(untrimmed.path, SR)) // 256


def test_read_manifest_errors(tmp_path):
    path = tmp_path / "m.csv"
    with pytest.raises(VoiceconvError, match="manifest not found"):
        read_manifest(path)
    path.write_text("file,who\na.wav,s\n")
    with pytest.raises(VoiceconvError, match=r"needs the columns path,speaker.*missing \['path', 'speaker'\]"):
        read_manifest(path)
    path.write_text("path,speaker\na.wav,\n")
    with pytest.raises(VoiceconvError, match=r"m.csv:2: empty path or speaker"):
        read_manifest(path)
    path.write_text("path,speaker\n")
    with pytest.raises(VoiceconvError, match="manifest has no rows"):
        read_manifest(path)
    path.write_text("path,speaker,transcript,extra\nsub/a.wav,s1,hello,x\n/abs/b.wav,s2,,y\n")
    rows = read_manifest(path)
    assert rows == [ManifestRow(str(tmp_path / "sub" / "a.wav"), "s1", "hello"), ManifestRow("/abs/b.wav", "s2", "")]
    with pytest.raises(VoiceconvError, match="shard size must be at least 1"):
        prepare(path, tmp_path / "out", shard_size=0)
    with pytest.raises(VoiceconvError, match="not a prepared directory .* run 'voiceconv prepare'"):
        PreparedCorpus(tmp_path)


# ------------------------------------------------------------------------------------ batcher


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three speakers with 1, 2 and 5 utterances of different lengths (some shorter than a segment)."""
    directory = tmp_path_factory.mktemp("batcher")
    speakers = {"a": (100.0, (600.0, 1100.0, 2500.0)), "b": (180.0, (800.0, 1500.0, 2800.0)),
                "c": (250.0, (900.0, 1800.0, 3200.0))}
    manifest = write_corpus(directory / "corpus", speakers, per_speaker=5, seconds=0.4)
    rows = read_manifest(manifest)
    keep = [r for r in rows if r.speaker == "c"] + [r for r in rows if r.speaker == "a"][:1] + \
        [r for r in rows if r.speaker == "b"][:2]
    write_manifest(manifest, keep)
    prepare(manifest, directory / "prepared", workers=1, progress=False, trim=False)
    return PreparedCorpus(directory / "prepared")


def test_batch_is_a_pure_function_of_seed_step_and_rank(corpus):
    batcher = SegmentBatcher(corpus, segment_frames=32, batch_size=6, seed=3, with_audio=True)
    first, again = batcher.batch(5), SegmentBatcher(corpus, 32, 6, seed=3, with_audio=True).batch(5)
    for key in ("mel", "speaker", "mask", "audio"):
        assert torch.equal(first[key], again[key]), key
    batcher.batch(6)  # drawing other steps in between changes nothing: there is no sampler state
    assert torch.equal(batcher.batch(5)["mel"], first["mel"])
    assert not torch.equal(batcher.batch(6)["mel"], first["mel"])
    assert not torch.equal(SegmentBatcher(corpus, 32, 6, seed=4).batch(5)["mel"], first["mel"])
    assert not torch.equal(SegmentBatcher(corpus, 32, 6, seed=3, rank=1, world_size=2).batch(5)["mel"], first["mel"])
    assert first["mel"].shape == (6, 80, 32) and first["mel"].dtype == torch.float32
    assert first["audio"].shape == (6, 32 * 256) and first["speaker"].dtype == torch.int64


def test_speakers_are_balanced_not_utterances(corpus):
    """Speaker c has 5 utterances and a has 1, but each speaker fills about a third of the batches."""
    batcher = SegmentBatcher(corpus, segment_frames=16, batch_size=16, seed=0)
    speakers = torch.cat([batcher.batch(step)["speaker"] for step in range(150)])
    shares = torch.bincount(speakers, minlength=3).float() / len(speakers)
    assert corpus.speakers == ["a", "b", "c"]
    assert torch.all((shares - 1 / 3).abs() < 0.04), shares
    only_c = SegmentBatcher(corpus, 16, 8, indices=corpus.indices_for(["c"]))
    assert set(only_c.batch(0)["speaker"].tolist()) == {2}  # ids stay those of the whole corpus


def test_short_utterances_are_padded_and_masked(corpus):
    segment = 64
    shortest = min(u.n_frames for u in corpus.utterances)
    assert shortest < segment  # the fixture really has utterances shorter than a segment
    batcher = SegmentBatcher(corpus, segment_frames=segment, batch_size=8, seed=1, with_audio=True)
    for step in range(5):
        batch = batcher.batch(step)
        for b in range(8):
            real = int(batch["mask"][b].sum())
            assert 0 < real <= segment
            assert torch.all(batch["mask"][b, :real] == 1) and torch.all(batch["mask"][b, real:] == 0)
            assert torch.all(batch["mel"][b, :, real:] == corpus.mel_config.min_log)  # padding is silence
            assert torch.all(batch["audio"][b, real * 256 :] == 0)
            assert batch["mel"][b, :, :real].max() > corpus.mel_config.min_log + 1  # real frames have content


def test_audio_segment_is_aligned_with_mel_segment(corpus):
    """The mel of the returned audio equals the returned mel, away from the edges the padding affects."""
    batcher = SegmentBatcher(corpus, segment_frames=24, batch_size=8, seed=2, with_audio=True)
    mel_fn = MelSpectrogram(corpus.mel_config)
    edge = 2  # reflect padding of 384 samples reaches 1.5 hops into the segment
    checked = 0
    for step in range(3):
        batch = batcher.batch(step)
        recomputed = mel_fn(batch["audio"])  # (B, n_mels, 24)
        for b in range(8):
            real = int(batch["mask"][b].sum())
            if real < 2 * edge + 4:
                continue
            inner = slice(edge, real - edge)
            difference = (recomputed[b, :, inner] - batch["mel"][b, :, inner]).abs()
            assert difference.max() < 0.05, difference.max()
            # ... and a one-frame shift would not pass, so the check is sensitive to alignment.
            shifted = (recomputed[b, :, edge + 1 : real - edge + 1] - batch["mel"][b, :, inner]).abs()
            assert shifted.max() > 0.5
            checked += 1
    assert checked >= 10


def test_split_speakers_is_deterministic_and_disjoint(corpus):
    train, held = corpus.split_speakers(1, seed=0)
    assert len(held) == 1 and sorted(train + held) == corpus.speakers
    assert corpus.split_speakers(1, seed=0) == (train, held)
    assert all(corpus.utterances[i].speaker in train for i in corpus.indices_for(train))
    with pytest.raises(VoiceconvError, match="no utterances to sample from"):
        SegmentBatcher(corpus, 16, 2, indices=[])
