"""The mel discriminator (voiceconv/models/mel_discriminator.py) and the VC term it drives (train.mel_adversary)."""

from __future__ import annotations

import pytest
import torch
from test_train import (
    DENOISE,
    _one_thread,  # noqa: F401 -- the same autouse one-thread fixture
    _parameters,
    _without_timing,
    experiment,
    make_corpus,
)

from voiceconv.checkpoint import load_train_state
from voiceconv.errors import ConfigError
from voiceconv.models.mel_discriminator import MelDiscriminator, MelDiscriminatorConfig
from voiceconv.models.vc_model import VCModel
from voiceconv.training import mel_adversary
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import Distributed
from voiceconv.training.loop import NanGuard
from voiceconv.training.mel_adversary import (
    MelAdversaryConfig,
    build_discriminator,
    discriminator_step,
    fill_padding,
    generator_terms,
)
from voiceconv.training.run_directory import read_metrics
from voiceconv.training.vc_trainer import State, train, train_step

ADVERSARY = [*DENOISE, "train.mel_adversary.lr=0.001", "train.lambdas.loss/mel_adv=1.0",
             "train.lambdas.loss/mel_fm=1.0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_discriminator_scores_patches_and_returns_its_feature_maps():
    torch.manual_seed(0)
    discriminator = MelDiscriminator()
    (logits, features), = discriminator(torch.randn(3, 80, 64))
    # Frequency halved three times (80 -> 10), time twice (64 -> 16): one logit per patch.
    assert logits.shape == (3, 10, 16)
    assert [f.shape[1] for f in features] == list(MelDiscriminatorConfig().channels)
    with pytest.raises(ValueError, match="batch, n_mels, frames"):
        discriminator(torch.randn(80, 64))
    with pytest.raises(ConfigError, match="one stride per layer"):
        MelDiscriminatorConfig(channels=(8, 8), strides=((2, 1),))
    with pytest.raises(ConfigError, match="strides"):
        MelDiscriminatorConfig(channels=(8,), strides=((0, 1),))


def test_discriminator_learns_to_tell_blurred_mels_from_sharp_ones():
    """The decoder's failure it exists for: a time-smoothed mel is told apart from the real one."""
    torch.manual_seed(0)
    config = MelAdversaryConfig(lr=2e-3)
    discriminator, optimizer = build_discriminator(config, torch.device("cpu"))

    def batch():
        real = torch.randn(8, 80, 32)
        kernel = torch.ones(80, 1, 5) / 5  # a 5-frame moving average per band
        blurred = torch.nn.functional.conv1d(real, kernel, padding=2, groups=80)
        return real, blurred

    losses = [discriminator_step(discriminator, optimizer, config, *batch(), None, None)["loss/mel_disc"]
              for _ in range(60)]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10, losses
    real, blurred = batch()
    with torch.no_grad():
        real_score = discriminator(real)[0][0].mean()
        fake_score = discriminator(blurred)[0][0].mean()
    assert real_score > fake_score + 0.3


def test_padding_is_taken_from_the_real_mel():
    real, output = torch.zeros(2, 80, 6), torch.ones(2, 80, 6)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    filled = fill_padding(output, real, mask)
    assert torch.equal(filled[0, :, :4], output[0, :, :4]) and torch.equal(filled[0, :, 4:], real[0, :, 4:])
    assert torch.equal(filled[1], output[1])
    assert fill_padding(output, real, None) is output


def test_generator_terms_reach_the_outputs_and_leave_the_discriminator_alone():
    torch.manual_seed(0)
    config = MelAdversaryConfig()
    discriminator, _ = build_discriminator(config, torch.device("cpu"))
    buffers = {k: v.clone() for k, v in discriminator.state_dict().items()}
    real = torch.randn(4, 80, 32)
    reconstruction = torch.randn(4, 80, 32, requires_grad=True)
    conversions = torch.randn(2, 80, 32, requires_grad=True)
    out = generator_terms(discriminator, config, real, reconstruction, conversions, None)
    assert set(out) == {"loss/mel_adv", "loss/mel_fm"}
    (out["loss/mel_adv"] + out["loss/mel_fm"]).backward()
    assert reconstruction.grad.abs().sum() > 0 and conversions.grad.abs().sum() > 0
    assert all(p.grad is None for p in discriminator.parameters())
    assert all(p.requires_grad for p in discriminator.parameters()) and discriminator.training
    for name, value in discriminator.state_dict().items():  # no power-iteration update either
        assert torch.equal(value, buffers[name]), name
    # Feature matching of a reconstruction that is its real mel is zero.
    assert float(generator_terms(discriminator, config, real, real.clone(), None, None)["loss/mel_fm"]) == 0.0


@pytest.mark.parametrize("conversions", [True, False])
def test_the_terms_reach_all_three_modules(corpus, conversions):
    """Gradients at weight 0 and 1 from the same weights (no clipping, which would rescale every gradient);
    without the conversions, through the reconstructions alone."""
    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    grads = {}
    for weight in (0.0, 1.0):
        config = experiment(*DENOISE, f"train.lambdas.loss/mel_adv={weight}", f"train.lambdas.loss/mel_fm={weight}",
                            "train.grad_clip=0")
        torch.manual_seed(0)
        model = VCModel(config.model)
        state = State(model, torch.optim.SGD(model.parameters(), lr=0.0), config.train, Distributed(), NanGuard(5))
        adversary = MelAdversaryConfig(conversions=conversions)
        torch.manual_seed(1)
        state.discriminator, state.discriminator_optimizer = build_discriminator(adversary, torch.device("cpu"))
        state.config.mel_adversary = adversary
        values = train_step(state, batch)
        assert {"loss/mel_adv", "loss/mel_fm", "loss/mel_disc"} <= set(values)
        grads[weight] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    for module in ("content_encoder.", "speaker_encoder.", "decoder."):
        names = [n for n in grads[0.0] if n.startswith(module)]
        assert names, module
        assert any(not torch.allclose(grads[0.0][n], grads[1.0][n]) for n in names), module


def test_training_with_the_adversary_learns_moves_every_parameter_and_resumes_exactly(corpus, tmp_path):
    options = [*ADVERSARY, "train.batch_size=8", "train.segment_frames=32", "train.lr=0.001", "train.log_every=5",
               "train.val_every=20", "train.checkpoint_every=10"]
    straight = tmp_path / "straight"
    torch.manual_seed(0)
    initial_model = VCModel(experiment(*options).model).state_dict()  # the loop's seed gives the same init
    train(experiment("train.steps=40", *options), corpus, straight, device="cpu", progress=False)
    rows = read_metrics(straight / "metrics.jsonl")
    training_rows = [row for row in rows if "loss/rec" in row]
    rec = [row["loss/rec"] for row in training_rows]
    assert rec[-1] < 0.8 * rec[0], rec
    assert all(key in row for row in training_rows for key in ("loss/mel_adv", "loss/mel_fm", "loss/mel_disc"))
    trained = _parameters(straight / "last")
    for name, value in trained.items():
        if name in ("mel_mean", "mel_std"):
            continue
        assert not torch.equal(value, initial_model[name]), name
    # The discriminator moved too: every weight differs from a fresh one built from the same seed.
    state = load_train_state(straight / "train_state.pt")
    saved = state["mel_discriminator"]
    assert "mel_discriminator_optimizer" in state
    torch.manual_seed(0)
    fresh = MelDiscriminator().state_dict()
    originals = [k for k in saved if k.endswith("original") or k.endswith("bias")]
    assert len(originals) == 2 * (len(MelDiscriminatorConfig().channels) + 1)
    for name in originals:
        assert not torch.equal(saved[name], fresh[name]), name

    split = tmp_path / "split"
    train(experiment("train.steps=20", *options), corpus, split, device="cpu", progress=False)
    halfway = load_train_state(split / "train_state.pt")["mel_discriminator"]
    train(experiment("train.steps=40", *options), corpus, split, resume=True, device="cpu", progress=False)
    for name in originals:  # and it goes on moving after the resume
        assert not torch.equal(halfway[name], saved[name]), name
    first, second = _parameters(straight / "last"), _parameters(split / "last")
    for name in first:
        assert torch.equal(first[name], second[name]), name
    resumed = load_train_state(split / "train_state.pt")["mel_discriminator"]
    for name, value in saved.items():
        assert torch.equal(value, resumed[name]), name
    assert rows == _without_timing(read_metrics(split / "metrics.jsonl"), rows)


def test_resuming_a_run_without_the_adversary_with_it_on_says_why(corpus, tmp_path):
    options = [*DENOISE, "train.batch_size=8", "train.segment_frames=32", "train.checkpoint_every=2",
               "train.val_every=100"]
    train(experiment("train.steps=2", *options), corpus, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(ConfigError, match="mel_discriminator.*--init-from"):
        train(experiment("train.steps=4", *options, "train.mel_adversary.lr=0.001"), corpus, tmp_path / "run",
              resume=True, device="cpu", progress=False)


def test_a_non_finite_discriminator_skips_the_step_and_counts_as_a_bad_step(corpus, monkeypatch):
    config = experiment(*ADVERSARY)
    torch.manual_seed(0)
    model = VCModel(config.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = State(model, torch.optim.Adam(model.parameters(), lr=1e-3), config.train, Distributed(), NanGuard(5))
    state.discriminator, state.discriminator_optimizer = build_discriminator(config.train.mel_adversary,
                                                                            torch.device("cpu"))
    discriminator_before = {k: v.clone() for k, v in state.discriminator.state_dict().items()}
    monkeypatch.setattr(mel_adversary, "discriminator_loss",
                        lambda real, fake: torch.tensor(float("nan"), requires_grad=True))
    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    values = train_step(state, batch)
    assert values["skipped_mel_disc"] == 1.0 and values["skipped"] == 1.0
    assert state.guard.total == 1
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for name, value in state.discriminator.state_dict().items():
        if not name.endswith(("_u", "_v")):  # the power iteration still ran in the forward passes
            assert torch.equal(value, discriminator_before[name]), name


def test_config_refuses_conversions_without_the_cycle():
    with pytest.raises(ConfigError, match="train.cycle"):
        experiment("train.mel_adversary.conversions=true")
    assert experiment("train.mel_adversary.conversions=false").train.mel_adversary.conversions is False
    with pytest.raises(ConfigError, match="lr"):
        MelAdversaryConfig(lr=0.0)
    with pytest.raises(ConfigError, match="betas"):
        MelAdversaryConfig(betas=(0.5, 1.5))
    with pytest.raises(ConfigError, match="positive"):
        MelDiscriminatorConfig(channels=(8, 0), strides=((2, 2), (1, 1)))
    with pytest.raises(ConfigError, match="known keys"):
        experiment(*DENOISE, "train.mel_adversary.learning_rate=0.1")
