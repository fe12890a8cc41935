"""Vocoder training: every parameter learns, exact resume, the CLI, VC fine-tuning and DDP."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_corpus

import voiceconv
import voiceconv.training.vocoder_trainer as vocoder_trainer
from voiceconv.checkpoint import resolve_model_dir
from voiceconv.config import apply_overrides, from_dict, load_yaml
from voiceconv.errors import ConfigError
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import Distributed
from voiceconv.training.prepare import prepare
from voiceconv.training.run_directory import read_metrics
from voiceconv.training.vocoder_trainer import (
    VocoderExperiment,
    build_state,
    learning_rate,
    split_validation,
    train,
    train_step,
)
from voiceconv.vocoder.model import Vocoder

DEBUG = Path(voiceconv.__file__).parent / "conf" / "vocoder_debug.yaml"

# The debug config with each generator family swapped in (tiny widths, the real kernels and rates).
GENERATORS = {
    "istft": [],
    "istft_consistent": ["model.istft.magnitude_prior=true", "model.istft.consistency_iters=2",
                         "model.istft.mel_projection=true"],
    "hifigan_v1": ["model.generator=hifigan", "model.hifigan.upsample_initial_channel=16"],
    "hifigan_v2": ["model.generator=hifigan", "model.hifigan.upsample_initial_channel=16",
                   "model.hifigan.resblock_kernel_sizes=[3,7]",
                   "model.hifigan.resblock_dilation_sizes=[[1,3,5],[1,3,5]]"],
    "hifigan_v3": ["model.generator=hifigan", "model.hifigan.resblock=2", "model.hifigan.upsample_rates=[8,8,4]",
                   "model.hifigan.upsample_kernel_sizes=[16,16,8]", "model.hifigan.upsample_initial_channel=16",
                   "model.hifigan.resblock_kernel_sizes=[3,5,7]",
                   "model.hifigan.resblock_dilation_sizes=[[1,2],[2,6],[3,12]]"],
}


def experiment(*overrides: str) -> VocoderExperiment:
    return from_dict(VocoderExperiment, apply_overrides(load_yaml(DEBUG), list(overrides)))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three synthetic speakers, three utterances each, prepared once for the whole module."""
    root = tmp_path_factory.mktemp("vocoder_data")
    manifest = write_corpus(root / "corpus", speakers={
        "low": (100.0, (600.0, 1100.0, 2500.0)), "mid": (150.0, (700.0, 1300.0, 2700.0)),
        "high": (220.0, (900.0, 1700.0, 3000.0))})
    prepare(manifest, root / "prepared", workers=1, progress=False)
    return root / "prepared"


def synthetic_batch(prepared_dir: Path, exp: VocoderExperiment) -> dict[str, torch.Tensor]:
    corpus = PreparedCorpus(prepared_dir)
    return SegmentBatcher(corpus, exp.train.segment_frames, exp.train.batch_size, seed=0, with_audio=True).batch(0)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("name", list(GENERATORS))
def test_a_step_moves_every_generator_and_discriminator_parameter(prepared, name):
    # No weight decay: with AdamW's decay a parameter would move even with a zero gradient.
    exp = experiment(*GENERATORS[name], "train.adversarial_start_step=0", "train.weight_decay=0")
    state = build_state(exp, Distributed())
    before_g, before_d = snapshot(state.generator), snapshot(state.discriminators)
    values = train_step(state, synthetic_batch(prepared, exp))
    assert {"loss/mel", "loss/stft", "loss/fm", "loss/adv", "loss/disc"} <= set(values)
    assert all(torch.isfinite(torch.tensor(v)) for v in values.values())
    assert values["skipped"] == 0.0
    for label, module, before in (("generator", state.generator, before_g),
                                  ("discriminator", state.discriminators, before_d)):
        frozen = [n for n, p in module.named_parameters() if torch.equal(p, before[n])]
        assert not frozen, f"{label} parameters that did not move: {frozen}"


def test_an_adversarial_step_in_cpu_bf16_moves_every_parameter_and_stays_finite(prepared):
    exp = experiment("train.adversarial_start_step=0", "train.weight_decay=0", "train.cpu_bf16=true")
    state = build_state(exp, Distributed())
    before_g, before_d = snapshot(state.generator), snapshot(state.discriminators)
    values = train_step(state, synthetic_batch(prepared, exp))
    assert values["skipped"] == 0.0 and all(torch.isfinite(torch.tensor(v)) for v in values.values())
    assert all(p.dtype == torch.float32 for p in state.generator.parameters())  # autocast, not a cast
    for module, before in ((state.generator, before_g), (state.discriminators, before_d)):
        assert not [n for n, p in module.named_parameters() if torch.equal(p, before[n])]


def test_warm_up_steps_train_the_generator_only(prepared):
    exp = experiment("train.adversarial_start_step=5")
    state = build_state(exp, Distributed())
    before_g, before_d = snapshot(state.generator), snapshot(state.discriminators)
    values = train_step(state, synthetic_batch(prepared, exp))
    assert set(k for k in values if k.startswith("loss/")) == {"loss/mel", "loss/stft", "loss/total"}
    assert all(torch.equal(p, before_d[n]) for n, p in state.discriminators.named_parameters())
    assert not any(torch.equal(p, before_g[n]) for n, p in state.generator.named_parameters())


def test_reconstruction_losses_fall_over_a_few_steps(prepared):
    exp = experiment("train.adversarial_start_step=1000", "train.lr_g=2e-3")
    state = build_state(exp, Distributed())
    batch = synthetic_batch(prepared, exp)
    first = train_step(state, batch)["loss/total"]
    for _ in range(15):
        last = train_step(state, batch)["loss/total"]
    assert last < 0.8 * first


def test_learning_rate_is_a_cosine_of_the_step():
    config = experiment("train.steps=100", "train.final_lr_ratio=0.1").train
    assert learning_rate(1.0, 0, config) == 1.0
    assert learning_rate(1.0, 50, config) == pytest.approx(0.55)
    assert learning_rate(1.0, 100, config) == pytest.approx(0.1)
    assert learning_rate(1.0, 500, config) == pytest.approx(0.1)


def test_cli_run_then_resume_is_identical_to_an_uninterrupted_run(prepared, tmp_path, monkeypatch):
    """A run killed after step 2 and resumed ends bit-identical to one that ran its 4 steps in one go.

    The debug config checkpoints every 2 steps and starts the discriminators at step 2, so the
    resumed part crosses into the adversarial phase with restored optimizer state.
    """
    import voiceconv.training.vocoder_trainer as module
    from voiceconv.cli import main

    base = ["train-vocoder", "--config", str(DEBUG), "--data", str(prepared), "--quiet", "train.steps=4"]
    assert main([*base, "--out", str(tmp_path / "straight")]) == 0

    original = module.train_step

    def crash_at_step_3(state, batch):
        if state.step == 2:
            raise KeyboardInterrupt  # as if the machine went away mid-run
        return original(state, batch)

    monkeypatch.setattr(module, "train_step", crash_at_step_3)
    assert main([*base, "--out", str(tmp_path / "split")]) == 130
    monkeypatch.setattr(module, "train_step", original)
    assert torch.load(tmp_path / "split" / "train_state.pt", weights_only=True)["step"] == 2
    assert main(["train-vocoder", "--data", str(prepared), "--out", str(tmp_path / "split"), "--resume",
                 "--quiet"]) == 0
    straight = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "train_state.pt", weights_only=True)
    assert straight["step"] == split["step"] == 4
    for part in ("generator", "discriminators"):
        assert straight[part].keys() == split[part].keys()
        for key in straight[part]:
            assert torch.equal(straight[part][key], split[part][key]), f"{part}.{key} differs after resume"
    # The run directory is usable: released-format vocoder, validation against Griffin-Lim logged.
    vocoder = Vocoder.from_pretrained(tmp_path / "straight" / "last", device="cpu")
    assert vocoder.decode(torch.zeros(80, 3) - 5).shape == (3 * 256,)
    assert (tmp_path / "straight" / "best" / "model.safetensors").is_file()
    metrics = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    logged = set().union(*metrics)
    assert {"loss/mel", "loss/adv", "loss/disc", "val/mel_l1", "val/mrstft", "val/mel_l1_griffin_lim"} <= logged
    resumed_metrics = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [m["step"] for m in resumed_metrics if "loss/total" in m] == [1, 2, 3, 4]


def test_a_run_saved_before_a_model_option_existed_still_resumes(prepared, tmp_path):
    import yaml

    train(experiment("train.steps=1", "model.istft.magnitude_prior=false"), prepared, tmp_path / "run",
          progress=False)
    config_path = tmp_path / "run" / "config.yaml"
    saved = yaml.safe_load(config_path.read_text())
    del saved["model"]["istft"]["magnitude_prior"]  # as an older voiceconv wrote it
    config_path.write_text(yaml.safe_dump(saved))
    from voiceconv.training.loop import experiment_from_args
    from voiceconv.training.vocoder_trainer import EXAMPLE_CONFIG, VocoderExperiment

    resumed = experiment_from_args(VocoderExperiment, None, ["train.steps=2"], tmp_path / "run", resume=True,
                                   example_config=EXAMPLE_CONFIG)
    train(resumed, prepared, tmp_path / "run", resume=True, progress=False)
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == 2


def test_new_run_refuses_an_existing_run_and_griffin_lim(prepared, tmp_path):
    exp = experiment("train.steps=1")
    train(exp, prepared, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train(exp, prepared, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="nothing to train"):
        train(experiment("model.generator=griffin_lim"), prepared, tmp_path / "gl", progress=False)


def test_init_from_starts_at_the_given_weights(prepared, tmp_path):
    exp = experiment("train.steps=1")
    train(exp, prepared, tmp_path / "first", progress=False)
    start = Vocoder.from_pretrained(tmp_path / "first" / "last", device="cpu")
    state = build_state(experiment(f"train.init_from={tmp_path / 'first' / 'last'}"), Distributed())
    for name, tensor in start.generator.state_dict().items():
        assert torch.equal(state.generator.generator.state_dict()[name], tensor)
    with pytest.raises(ConfigError, match="differs"):
        build_state(experiment(f"train.init_from={tmp_path / 'first' / 'last'}", "model.istft.dim=16"),
                    Distributed())


def test_init_from_may_change_the_refinement_iterations_which_have_no_weights(prepared, tmp_path):
    """A generator trained through Griffin-Lim iterations can be fine-tuned without them (issue 13)."""
    train(experiment("train.steps=1", "model.istft.consistency_iters=2"), prepared, tmp_path / "first",
          progress=False)
    start = Vocoder.from_pretrained(tmp_path / "first" / "last", device="cpu")
    state = build_state(experiment(f"train.init_from={tmp_path / 'first' / 'last'}",
                                   "model.istft.consistency_iters=0"), Distributed())
    assert state.generator.generator.config.consistency_iters == 0
    for name, tensor in start.generator.state_dict().items():
        assert torch.equal(state.generator.generator.state_dict()[name], tensor)


def test_finetuning_feeds_the_vc_reconstruction_of_whole_utterances(prepared, tmp_path, monkeypatch):
    """The mel transform (a VC model's convert(mel, embed(mel)) in real use) sees each whole utterance
    once, and every training batch and validation utterance reads its output."""
    corpus = PreparedCorpus(prepared)
    seen = []

    def transform(mel: torch.Tensor) -> torch.Tensor:
        seen.append(mel.shape[-1])
        return mel + 0.5  # a recognisably different mel

    batches, validated = [], []
    original_step, original_validate = vocoder_trainer.train_step, vocoder_trainer.validate

    def spy_step(state, batch):
        batches.append((state.step, batch["mel"].clone()))
        return original_step(state, batch)

    def spy_validate(vocoder, val, device):
        validated.extend(mel.clone() for mel in val.mels)
        return original_validate(vocoder, val, device)

    monkeypatch.setattr(vocoder_trainer, "train_step", spy_step)
    monkeypatch.setattr(vocoder_trainer, "validate", spy_validate)
    exp = experiment("train.steps=2")
    train(exp, prepared, tmp_path / "ft", progress=False, mel_transform=transform)
    assert seen == [u.n_frames for u in corpus.utterances]  # whole utterances, each once
    rebuilt = corpus.with_mels(tmp_path / "ft" / "vc_mels.npy")
    assert np.allclose(np.asarray(rebuilt.mels, np.float32), np.asarray(corpus.mels, np.float32) + 0.5, atol=1e-2)
    # The batches are exactly those of the reconstructed corpus, not of the recordings' mels.
    train_indices, val_indices = split_validation(corpus, exp.train.n_val_utterances, exp.train.seed)
    expected = SegmentBatcher(rebuilt, exp.train.segment_frames, exp.train.batch_size, exp.train.seed,
                              train_indices, with_audio=True)
    assert [step for step, _ in batches] == [0, 1]
    for step, mel in batches:
        assert torch.equal(mel, expected.batch(step)["mel"]), step
    assert validated and len(validated) % len(val_indices) == 0
    for mel, index in zip(validated, val_indices):
        assert torch.equal(mel, torch.from_numpy(rebuilt.mel(index, 0, mel.shape[-1]))), index


def test_finetune_from_a_saved_vc_model_reuses_its_reconstructions_until_the_model_changes(
        prepared, tmp_path, monkeypatch):
    vc_model = pytest.importorskip("voiceconv.models.vc_model")
    from voiceconv.training.vc_trainer import load_experiment

    vc_experiment = load_experiment(Path(voiceconv.__file__).parent / "conf" / "debug.yaml")
    torch.manual_seed(0)
    vc_model.VCModel(vc_experiment.model).save_pretrained(tmp_path / "vc_run" / "last")
    assert resolve_model_dir(tmp_path / "vc_run") == tmp_path / "vc_run" / "last"
    built = []
    original = vocoder_trainer.vc_mel_transform

    def counting(*args, **kwargs):
        built.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(vocoder_trainer, "vc_mel_transform", counting)

    from voiceconv.cli import main

    out = tmp_path / "ft"
    command = ["train-vocoder", "--config", str(DEBUG), "--data", str(prepared), "--out", str(out),
               "--finetune-from-vc", str(tmp_path / "vc_run"), "--quiet"]
    assert main(command + ["train.steps=1"]) == 0
    saved = load_yaml(out / "config.yaml")
    assert saved["train"]["finetune_from_vc"] == str(tmp_path / "vc_run")
    assert len(built) == 1 and (out / "vc_mels.npy").is_file()
    first = np.load(out / "vc_mels.npy")
    # A resume (the run's own config.yaml) with the same VC model reads the reconstructions back without
    # loading the model.
    resume = ["train-vocoder", "--data", str(prepared), "--out", str(out), "--resume", "--quiet"]
    assert main(resume + ["train.steps=2"]) == 0
    assert len(built) == 1
    # New weights at the same path: the reconstructions are made again.
    torch.manual_seed(1)
    vc_model.VCModel(vc_experiment.model).save_pretrained(tmp_path / "vc_run" / "last")
    assert main(resume + ["train.steps=3"]) == 0
    assert len(built) == 2 and not np.array_equal(np.load(out / "vc_mels.npy"), first)


def _ddp_worker(rank: int, world_size: int, port: int, prepared: str, out: str, result_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    exp = experiment("train.steps=3", "train.adversarial_start_step=1")
    import voiceconv.training.vocoder_trainer as module

    original = module.train_step
    finals = {}

    def recording_step(state, batch):
        values = original(state, batch)
        finals["generator"] = {k: v.detach().clone() for k, v in state.generator.module.state_dict().items()}
        finals["discriminators"] = {k: v.detach().clone()
                                    for k, v in state.discriminators.module.state_dict().items()}
        return values

    module.train_step = recording_step
    train(exp, prepared, out, device="cpu", progress=False)
    torch.save(finals, Path(result_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_keeps_replicas_identical(prepared, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(prepared), str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for part in ("generator", "discriminators"):
        for key, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][key]), f"{part}.{key} differs between ranks"
    assert (tmp_path / "run" / "last" / "model.safetensors").is_file()
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["world_size"] == 2
