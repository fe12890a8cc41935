"""The VC training loop: it learns and converts, resumes exactly, runs under torchrun, survives NaNs.

The corpus is synthetic "speech" made here: each speaker has its own F0, vocal-tract length
(formant scale) and spectral tilt; each utterance is a random sequence of vowels, noise bursts and
pauses, so content varies while the voice stays. Everything is seeded and CPU-only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import voiceconv
import voiceconv.training.vc_trainer as train_module
from voiceconv import cli
from voiceconv.checkpoint import load_train_state
from voiceconv.errors import ConfigError, TrainingError
from voiceconv.features import MelConfig
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus
from voiceconv.training.distributed import Distributed
from voiceconv.training.loop import NanGuard, cosine_decay
from voiceconv.training.prepare import ManifestRow, prepare, write_manifest
from voiceconv.training.run_directory import read_metrics
from voiceconv.training.vc_trainer import State, load_experiment, loss_weights, train, train_step

DEBUG_CONFIG = Path(voiceconv.__file__).parent / "conf" / "debug.yaml"

# (F1, F2, F3) of a few vowels (Peterson & Barney averages); formant_scale moves them per speaker.
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (440, 1020, 2240), (660, 1720, 2410)]


def synthetic_utterance(rng: np.random.Generator, f0: float, formant_scale: float, tilt: float, n_phones: int,
                        sample_rate: int = 22050) -> np.ndarray:
    """One utterance ``(T,)`` float32: a harmonic source at ``f0`` through speaker-scaled vowel formants.

    ``tilt`` is the spectral slope exponent (amplitude ~ f ** -tilt). About 20 % of the phones are
    noise bursts or pauses, and formants glide between phones (40 ms smoothing).
    """
    control_rate = 200  # control points per second (5 ms)
    formants, voiced, noise = [], [], []
    for _ in range(n_phones):
        n = int(rng.integers(16, 44))  # 80-220 ms per phone
        kind = rng.random()
        formants.append(np.repeat(np.array(VOWELS[rng.integers(len(VOWELS))], float)[None], n, 0))  # (n, 3)
        voiced.append(np.full(n, float(kind < 0.8)))
        noise.append(np.full(n, float(0.8 <= kind < 0.92)))
    formants = np.concatenate(formants)  # (n_control, 3)
    kernel = np.ones(8) / 8
    formants = np.stack([np.convolve(np.pad(formants[:, j], 4, mode="edge"), kernel, "same")[4:-4]
                         for j in range(3)], 1)  # (n_control, 3), smoothed along time
    voiced, noise = np.concatenate(voiced), np.concatenate(noise)
    t = np.arange(len(voiced)) / control_rate
    # Slow intonation and declination, so F0 is not constant.
    f0_control = f0 * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6.3))) * (1 - 0.05 * t)
    n_samples = int(len(voiced) * sample_rate / control_rate)
    ts = np.arange(n_samples) / sample_rate
    phase = 2 * np.pi * np.cumsum(np.interp(ts, t, f0_control)) / sample_rate
    n_harmonics = int(sample_rate / 2 / f0_control.min())
    harmonic = np.arange(1, n_harmonics + 1)
    frequency = f0_control[:, None] * harmonic[None]  # (n_control, H)
    envelope = np.zeros_like(frequency)
    for j, (bandwidth, gain) in enumerate([(90, 1.0), (120, 0.6), (180, 0.35)]):
        envelope += gain / (1 + ((frequency - formant_scale * formants[:, j : j + 1]) / bandwidth) ** 2)
    envelope *= (frequency / 100.0) ** (-tilt) * (frequency < sample_rate / 2 - 200) * voiced[:, None]
    audio = np.zeros(n_samples)
    for k in range(n_harmonics):
        audio += np.interp(ts, t, envelope[:, k]) * np.sin(harmonic[k] * phase)
    audio = audio / (np.abs(audio).max() + 1e-9) * 0.5
    audio += np.diff(rng.standard_normal(n_samples + 1)) * np.interp(ts, t, noise) * 0.15  # high-passed noise
    return (audio / np.abs(audio).max() * 0.7).astype(np.float32)


def make_corpus(root: Path, n_speakers: int = 8, n_utterances: int = 6, seed: int = 0) -> Path:
    """Write WAVs and a manifest under ``root`` and prepare them; returns the prepared directory."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    f0s = np.geomspace(90, 280, n_speakers)
    scales = np.linspace(0.85, 1.2, n_speakers)[rng.permutation(n_speakers)]  # VTL not tied to F0
    tilts = np.linspace(1.0, 0.4, n_speakers)[rng.permutation(n_speakers)]
    rows = []
    for k in range(n_speakers):
        for u in range(n_utterances):
            audio = synthetic_utterance(rng, f0s[k], scales[k], tilts[k], int(rng.integers(6, 12)))
            path = root / "wav" / f"spk{k}_{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, 22050)
            rows.append(ManifestRow(str(path), f"spk{k}"))
    write_manifest(root / "manifest.csv", rows)
    prepare(root / "manifest.csv", root / "prepared", MelConfig(), workers=1, progress=False)
    return root / "prepared"


def short_run(root: Path, steps: int, corpus_seed: int) -> tuple[Path, Path]:
    """(prepared corpus, run directory) of a one-thread run of ``steps`` steps on 8 synthetic speakers,
    for tests that need a model that has learned something (probe, input check)."""
    corpus = make_corpus(root / "corpus", seed=corpus_seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(experiment(f"train.steps={steps}", "train.batch_size=16", "train.segment_frames=64", "train.lr=0.001",
                         f"train.log_every={steps // 3}", f"train.val_every={steps}",
                         f"train.checkpoint_every={steps}"),
              corpus, root / "run", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    return corpus, root / "run"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """8 speakers x 6 utterances (~1.2 s each), prepared."""
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def experiment_overrides() -> list[str]:
    """Small batches and frequent logging, validation and checkpoints (as CLI ``key=value`` arguments)."""
    return ["train.batch_size=8", "train.segment_frames=32", "train.log_every=5", "train.val_every=10",
            "train.checkpoint_every=10", "train.n_val_speakers=2", "train.val_max_frames=64"]


def experiment(*overrides: str):
    """The debug config, sized for seconds-long CPU runs, plus ``overrides``."""
    return load_experiment(DEBUG_CONFIG, experiment_overrides() + list(overrides))


@pytest.fixture(autouse=True)
def _one_thread():
    """Deterministic and polite on a shared CPU; restores the caller's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_learns_and_converts_toward_the_target(corpus, tmp_path):
    """The acceptance test: loss/rec falls, and A -> B conversion moves A's voice to B in the model's own space."""
    run = tmp_path / "run"
    scores = train(experiment("train.steps=400", "train.batch_size=16", "train.segment_frames=64",
                              "train.lr=0.001", "train.log_every=50", "train.val_every=200",
                              "train.checkpoint_every=200", "train.keep_checkpoints=1"),
                   corpus, run, device="cpu", progress=False)
    curve = [row["loss/rec"] for row in read_metrics(run / "metrics.jsonl") if "loss/rec" in row]
    assert len(curve) == 8
    assert curve[-1] < 0.6 * curve[0], curve
    assert np.isfinite(scores["val/rec"]) and np.isfinite(scores["val/conversion_gain"])
    for name in ("config.yaml", "train_state.pt", "last/model.safetensors", "best/model.safetensors",
                 "checkpoints/step_0000400/config.json"):
        assert (run / name).exists(), name
    assert not (run / "checkpoints/step_0000200").exists()  # keep_checkpoints=1 pruned it

    model = VCModel.from_pretrained(run / "last", device="cpu")
    assert float(model.mel_std.min()) > 0 and not torch.equal(model.mel_mean, torch.zeros_like(model.mel_mean))
    data = PreparedCorpus(corpus)
    train_speakers, _ = data.split_speakers(2, 0)
    with torch.no_grad():
        mels = {s: [torch.from_numpy(data.mel(i))[None] for i in data.indices_for([s])] for s in train_speakers}
        centroid = {s: torch.cat([model.embed(m) for m in ms]).mean(0) for s, ms in mels.items()}
        gains, closer_to_target = [], []
        for a in train_speakers:
            source = mels[a][0]
            for b in train_speakers:
                if a == b:
                    continue
                converted_vector = model.embed(model.convert(source, centroid[b]))[0]
                sim_converted = torch.cosine_similarity(converted_vector, centroid[b], dim=0).item()
                sim_source = torch.cosine_similarity(model.embed(source)[0], centroid[b], dim=0).item()
                sim_to_a = torch.cosine_similarity(converted_vector, centroid[a], dim=0).item()
                gains.append(sim_converted - sim_source)
                closer_to_target.append(sim_converted > sim_to_a)
    # 30 seen-speaker pairs. Measured over corpus/train seeds 0-3: mean gain 0.07-0.14 (similarities
    # ~0.90 -> ~0.99), 97-100 % of pairs positive, 93-100 % closer to the target than to the source.
    assert np.mean(gains) > 0.03, gains
    assert np.mean(np.array(gains) > 0) >= 0.9, gains
    assert np.mean(closer_to_target) >= 0.8, closer_to_target


def _parameters(model_dir: Path) -> dict[str, torch.Tensor]:
    return VCModel.from_pretrained(model_dir, device="cpu").state_dict()


def test_resume_replays_the_run_exactly(corpus, tmp_path, monkeypatch):
    """N + M steps straight == N steps, stop, --resume, Ctrl-C, --resume: same weights, same loss curve.

    Augmentation (random gain and VTLP) and the VAE's sampling noise are on, so the data order,
    augmentation draws and every RNG must all be restored. The split run goes through the CLI.
    """
    options = ["train.log_every=5", "train.augment.gain_probability=0.5", "train.augment.vtlp_probability=0.5"]
    straight = tmp_path / "straight"
    train(experiment("train.steps=30", *options), corpus, straight, device="cpu", progress=False)

    split = tmp_path / "split"
    common = ["--data", str(corpus), "--out", str(split), "--device", "cpu", "--quiet"]
    assert cli.main(["train", "--config", str(DEBUG_CONFIG), *common, *experiment_overrides(), "train.steps=20",
                     *options]) == 0
    assert load_train_state(split / "train_state.pt")["step"] == 20
    # Ctrl-C at step 25 saves a resume point (simulated by interrupting before the 26th step).
    real_step = train_module.train_step

    def interrupted(state, batch):
        if state.step == 25:
            raise KeyboardInterrupt
        return real_step(state, batch)

    monkeypatch.setattr(train_module, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(experiment("train.steps=30", *options), corpus, split, resume=True, device="cpu", progress=False)
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert load_train_state(split / "train_state.pt")["step"] == 25
    # No --config: the run's own config.yaml is read back; only the step budget changes.
    assert cli.main(["train", "--resume", *common, "train.steps=30"]) == 0

    first, second = _parameters(straight / "last"), _parameters(split / "last")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert read_metrics(straight / "metrics.jsonl") == _without_timing(read_metrics(split / "metrics.jsonl"),
                                                                       read_metrics(straight / "metrics.jsonl"))


def _without_timing(rows: list[dict], reference: list[dict]) -> list[dict]:
    """``rows`` with the wall-clock ``steps_per_second`` copied from ``reference`` (it is not part of the run)."""
    assert len(rows) == len(reference)
    out = []
    for row, ref in zip(rows, reference):
        row = dict(row)
        if "steps_per_second" in row:
            row["steps_per_second"] = ref["steps_per_second"]
        out.append(row)
    return out


VARIANTS = {
    "vq": ["model.content_encoder.variational=false", "model.quantizer.codebook_size=16",
           "model.quantizer.code_dim=4"],
    "adv": ["model.speaker_classifier.channels=8", "model.speaker_classifier.n_layers=1",
            "model.speaker_classifier.pretrain_steps=1"],
}
VARIANTS["vq_adv"] = VARIANTS["vq"] + VARIANTS["adv"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_through_the_same_loop(variant, corpus, tmp_path):
    """The optional modules only add loss keys: the loop weighs and logs them without knowing the variant."""
    run = tmp_path / variant
    train(experiment("train.steps=4", "train.log_every=1", "train.val_every=4", "train.checkpoint_every=4",
                     "train.augment.vtlp_probability=0.5", *VARIANTS[variant]), corpus, run, device="cpu",
          progress=False)
    rows = [row for row in read_metrics(run / "metrics.jsonl") if "loss/rec" in row]
    assert len(rows) == 4
    expected = {"vq": {"loss/vq_commit"}, "adv": {"loss/adv"}, "vq_adv": {"loss/vq_commit", "loss/adv"}}[variant]
    assert expected <= set(rows[-1])
    assert all(np.isfinite(v) for row in rows for v in row.values())
    assert rows[-1]["skipped"] == 0.0
    VCModel.from_pretrained(run / "last", device="cpu")  # the released directory loads back


def test_run_directory_is_protected(corpus, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="nothing to resume|no train_state"):
        train(experiment("train.steps=2"), corpus, run, resume=True, device="cpu", progress=False)
    train(experiment("train.steps=2"), corpus, run, device="cpu", progress=False)
    with pytest.raises(TrainingError, match="--resume"):
        train(experiment("train.steps=4"), corpus, run, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="model section differs"):
        train(experiment("train.steps=4", "model.decoder.channels=24"), corpus, run, resume=True, device="cpu",
              progress=False)
    with pytest.raises(ConfigError, match="unknown key"):
        experiment("train.stepz=4")


def test_loss_weights_ramp_linearly():
    config = experiment("train.warmup.loss/kl=100").train
    keys = ["loss/rec", "loss/kl", "loss/new"]
    assert loss_weights(config, keys, 0) == {"loss/rec": 10.0, "loss/kl": 0.0, "loss/new": 1.0}
    assert loss_weights(config, keys, 50)["loss/kl"] == pytest.approx(0.5)
    assert loss_weights(config, keys, 500)["loss/kl"] == pytest.approx(1.0)


def test_learning_rate_decays_along_a_cosine(corpus, tmp_path):
    run = tmp_path / "run"
    train(experiment("train.steps=8", "train.log_every=1", "train.lr=0.001", "train.final_lr_ratio=0.1"), corpus,
          run, device="cpu", progress=False)
    rates = [row["lr"] for row in read_metrics(run / "metrics.jsonl") if "lr" in row]
    expected = [cosine_decay(0.001, step, 8, 0.1) for step in range(8)]
    assert rates == pytest.approx(expected)
    assert rates[0] == pytest.approx(0.001) and rates[-1] < 0.0002
    with pytest.raises(ValueError, match="final_lr_ratio"):
        experiment("train.final_lr_ratio=1.5")


def _state(max_bad_steps: int) -> State:
    exp = experiment(f"train.max_bad_steps={max_bad_steps}")
    model = VCModel(exp.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return State(model, optimizer, exp.train, Distributed(), NanGuard(max_bad_steps))


def test_nan_loss_skips_the_step_then_aborts(monkeypatch):
    state = _state(max_bad_steps=3)
    batch = {"mel": torch.randn(4, 80, 32) - 5, "speaker": torch.zeros(4, dtype=torch.long),
             "mask": torch.ones(4, 32)}
    assert train_step(state, batch)["skipped"] == 0.0
    before = {k: v.clone() for k, v in state.model.state_dict().items()}

    forward = VCModel.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out["loss/rec"] = out["loss/rec"] * float("nan")
        return out

    monkeypatch.setattr(VCModel, "forward", poisoned)
    for _ in range(2):
        assert train_step(state, batch)["skipped"] == 1.0
    for name, value in state.model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed in a skipped step"
    assert state.step == 3
    with pytest.raises(TrainingError, match="3 consecutive steps"):
        train_step(state, batch)

    # A good step in between resets the count.
    monkeypatch.setattr(VCModel, "forward", forward)
    state = _state(max_bad_steps=2)
    for poison in (True, False, True, False):
        monkeypatch.setattr(VCModel, "forward", poisoned if poison else forward)
        assert train_step(state, batch)["skipped"] == float(poison)


def test_nan_loss_aborts_a_run_with_a_clear_error(corpus, tmp_path, monkeypatch):
    forward = VCModel.forward
    monkeypatch.setattr(VCModel, "forward", lambda self, *a, **k: {
        **forward(self, *a, **k), "loss/kl": torch.tensor(float("inf"))})
    with pytest.raises(TrainingError, match="diverged.*lower learning rate"):
        train(experiment("train.steps=20", "train.max_bad_steps=4"), corpus, tmp_path / "run", device="cpu",
              progress=False)


@pytest.mark.slow
def test_torchrun_two_processes_train_and_save(corpus, tmp_path):
    """Two gloo processes on the CPU: each trains on its half of the batch, rank 0 saves one checkpoint."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "voiceconv.cli", "train", "--config", str(DEBUG_CONFIG), "--data", str(corpus), "--out",
               str(run), "--device", "cpu", "--quiet", *experiment_overrides(), "train.steps=6",
               "train.checkpoint_every=3"]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = load_train_state(run / "train_state.pt")
    assert state["step"] == 6 and state["world_size"] == 2 and len(state["rng"]) == 2
    # Each rank saw its own noise stream.
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert (run / "last" / "model.safetensors").is_file() and (run / "checkpoints" / "step_0000006").is_dir()
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss/rec" in r] == [5, 6]  # only rank 0 writes
    assert json.loads((run / "last" / "config.json").read_text())["kind"] == "vc_model"
    print(f"torchrun test took {time.perf_counter() - started:.1f} s")


# ---------------------------------------------------------------- de-noising, references, warm start

DENOISE = ["train.channel.probability=1.0", "train.separate_reference=true", "train.content_warp.probability=0.8",
           "train.cycle.share=0.5"]


def test_batcher_reference_is_another_segment_of_the_same_speaker(corpus):
    from voiceconv.training.data import SegmentBatcher

    data = PreparedCorpus(corpus)
    plain = SegmentBatcher(data, 32, 8, seed=0).batch(3)
    with_ref = SegmentBatcher(data, 32, 8, seed=0, with_reference=True).batch(3)
    # The main segments do not change when references are asked for.
    assert torch.equal(plain["mel"], with_ref["mel"]) and torch.equal(plain["speaker"], with_ref["speaker"])
    assert with_ref["ref_mel"].shape == with_ref["mel"].shape and with_ref["ref_mask"].shape == with_ref["mask"].shape
    assert not torch.equal(with_ref["ref_mel"], with_ref["mel"])
    # Every reference comes from an utterance of the row's own speaker.
    names = {k: s for k, s in enumerate(data.speakers)}
    for b in range(8):
        speaker = names[int(with_ref["speaker"][b])]
        length = int(with_ref["ref_mask"][b].sum())
        reference = with_ref["ref_mel"][b, :, :length].numpy()
        found = False
        for index in data.indices_for([speaker]):
            full = data.mel(index)
            for start in range(full.shape[1] - length + 1):
                if np.array_equal(full[:, start:start + length], reference):
                    found = True
                    break
        assert found, b


def test_denoising_training_learns_and_moves_every_parameter(corpus, tmp_path):
    """Channel-corrupted and warped encoder inputs, a separate reference segment, the cycle term and CPU bf16:
    the clean-target loss and the cycle loss fall and every parameter moves."""
    run = tmp_path / "run"
    initial = VCModel(experiment().model).state_dict()  # the loop's seed_everything gives the same init
    train(experiment("train.steps=120", "train.batch_size=16", "train.segment_frames=64", "train.lr=0.001",
                     "train.log_every=20", "train.val_every=120", "train.checkpoint_every=120", "train.cpu_bf16=true",
                     *DENOISE), corpus, run, device="cpu", progress=False)
    curve = [row["loss/rec"] for row in read_metrics(run / "metrics.jsonl") if "loss/rec" in row]
    assert curve[-1] < 0.75 * curve[0], curve
    cycle = [row["loss/cycle"] for row in read_metrics(run / "metrics.jsonl") if "loss/cycle" in row]
    assert cycle and cycle[-1] < 0.75 * cycle[0], cycle  # the round trip through another voice learns too
    trained = _parameters(run / "last")
    torch.manual_seed(0)
    for name, value in trained.items():
        if name in ("mel_mean", "mel_std"):
            continue
        assert value.shape == initial[name].shape
        assert not torch.equal(value, initial[name]) or "num_batches" in name, name


def test_channel_inputs_reach_the_encoders_and_the_target_stays_clean(corpus):
    """With the channel on, the model gets corrupted ``content_mel``/``speaker_mel`` and the clean ``mel``."""
    from voiceconv.training.vc_trainer import _encoder_inputs

    experiment_config = experiment(*DENOISE)
    model = VCModel(experiment_config.model)
    state = State(model, torch.optim.Adam(model.parameters()), experiment_config.train,
                  Distributed(), NanGuard(5))
    from voiceconv.training.data import SegmentBatcher

    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    inputs = _encoder_inputs(batch, state)
    assert set(inputs) == {"content_mel", "speaker_mel", "speaker_mask"}
    assert not torch.allclose(inputs["content_mel"], batch["mel"], atol=1e-3)
    assert not torch.allclose(inputs["speaker_mel"], batch["ref_mel"], atol=1e-3)
    assert torch.equal(inputs["speaker_mask"], batch["ref_mask"])
    # Off by default: AdaIN-VC's single input.
    state.config = experiment().train
    plain = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0).batch(0)
    assert _encoder_inputs(plain, state) == {}


def test_init_from_warm_starts_and_refuses_another_architecture(corpus, tmp_path):
    first = tmp_path / "first"
    train(experiment("train.steps=10"), corpus, first, device="cpu", progress=False)
    second = tmp_path / "second"
    # Through the CLI, as a user would continue the shipped model; zero steps keeps the weights as loaded.
    assert cli.main(["train", "--config", str(DEBUG_CONFIG), "--data", str(corpus), "--out", str(second),
                     "--device", "cpu", "--quiet", "--init-from", str(first / "last"), *experiment_overrides(),
                     "train.steps=1", "train.lr=1e-12"]) == 0
    loaded, source = _parameters(second / "last"), _parameters(first / "last")
    for name in source:
        assert torch.allclose(loaded[name], source[name], atol=1e-6), name  # statistics included
    config_text = (second / "config.yaml").read_text()
    assert f"init_from: {first / 'last'}" in config_text  # the chain is recorded in the run
    with pytest.raises(ConfigError, match="architecture differs.*decoder.channels"):
        train(experiment("model.decoder.channels=24", f"train.init_from={first / 'last'}"), corpus,
              tmp_path / "third", device="cpu", progress=False)
