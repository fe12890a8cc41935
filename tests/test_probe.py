"""The disentanglement probe: accuracies are probabilities, and a trained model's speaker vector
carries more speaker identity than its content code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train import short_run  # a short run on the synthetic multi-speaker corpus

from voiceconv import cli
from voiceconv.checkpoint import resolve_model_dir
from voiceconv.errors import CheckpointError
from voiceconv.evaluation.probe import ProbeConfig, format_table, make_chunks, run_probe
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared corpus, run directory) of a short training run on 8 synthetic speakers."""
    return short_run(tmp_path_factory.mktemp("probe"), steps=150, corpus_seed=1)


def test_chunks_split_each_speaker_in_time_order(trained):
    corpus = PreparedCorpus(trained[0])
    train_chunks, test_chunks = make_chunks(corpus, corpus.speakers, ProbeConfig(chunk_seconds=0.5))
    for speaker in corpus.speakers:
        first = [(c.index, c.start) for c in train_chunks if c.speaker == speaker]
        second = [(c.index, c.start) for c in test_chunks if c.speaker == speaker]
        assert first and second
        assert max(first) < min(second)  # test chunks come after every training chunk: no overlap in time
    assert all(c.length == round(0.5 * corpus.mel_config.frame_rate) or c.start == 0 for c in train_chunks)


def test_speaker_vector_carries_more_speaker_than_content(trained):
    corpus, run = trained
    model = VCModel.from_pretrained(resolve_model_dir(run), device="cpu")
    report = run_probe(model, PreparedCorpus(corpus), ProbeConfig(chunk_seconds=0.5))
    print(format_table(report))  # shown with pytest -s
    probes = report["probes"]
    assert set(probes) == {"speaker_vector", "content_mean", "content_frames", "input_mel_mean"}
    for probe in probes.values():
        for key in ("train_accuracy", "test_accuracy", "chance"):
            assert 0.0 <= probe[key] <= 1.0
    assert report["n_speakers"] == 8 and 0 < report["chance"] < 0.5
    assert probes["speaker_vector"]["test_accuracy"] > probes["content_mean"]["test_accuracy"] + 0.2, probes
    assert probes["speaker_vector"]["test_accuracy"] > probes["content_frames"]["test_accuracy"] + 0.2, probes
    assert probes["speaker_vector"]["test_accuracy"] > 2 * report["chance"], probes


def test_probe_cli_writes_json(trained, tmp_path, capsys):
    corpus, run = trained
    out = tmp_path / "probe.json"
    assert cli.main(["probe", str(run), "--data", str(corpus), "--out", str(out), "--chunk-seconds", "0.5",
                     "--speakers", "train", "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["n_speakers"] == 6 and report["speakers"] == "train"  # 2 of 8 were held out in training
    assert "speaker_vector" in capsys.readouterr().out
    with pytest.raises(CheckpointError):
        resolve_model_dir(tmp_path)
