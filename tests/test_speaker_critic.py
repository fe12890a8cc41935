"""The speaker critic (voiceconv/models/speaker_critic.py) and the VC term it drives (train.speaker_critic)."""

from __future__ import annotations

import pytest
import torch
from test_train import DENOISE, experiment, make_corpus

from voiceconv.errors import ConfigError
from voiceconv.evaluation.metrics import equal_error_rate
from voiceconv.features import MelConfig
from voiceconv.models.speaker_critic import SpeakerCritic, SpeakerCriticConfig
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import Distributed, seed_everything
from voiceconv.training.loop import NanGuard
from voiceconv.training.speaker_critic import CriticTrainConfig, critic_loss, held_out_trials, train_critic
from voiceconv.training.vc_trainer import State, train_step


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("critic_corpus"))


@pytest.fixture(scope="module")
def trained_critic(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("critic") / "critic"
    config = CriticTrainConfig(steps=80, batch_size=16, segment_frames=64, lr=3e-3, n_val_speakers=2, log_every=20)
    critic, scores, held_out = train_critic(corpus, config)
    scores["val_eer"] = equal_error_rate(*held_out_trials(critic, PreparedCorpus(corpus), held_out))[0]
    critic.save_pretrained(out)
    return out, scores, config


def test_critic_training_learns_to_tell_held_out_speakers_apart_and_moves_every_parameter(corpus, trained_critic):
    out, scores, config = trained_critic
    assert scores["loss_last"] < 0.6 * scores["loss_first"], scores
    # The two held-out speakers were never trained on; their utterances still group by voice.
    assert scores["val_eer"] < 0.2, scores
    seed_everything(config.seed)
    data = PreparedCorpus(corpus)
    initial = SpeakerCritic(SpeakerCriticConfig(mel=data.mel_config), n_speakers=6).state_dict()
    trained = SpeakerCritic.from_pretrained(out, device="cpu").state_dict()
    assert "centres" not in trained  # the class centres are training-only
    for name, value in trained.items():
        if "num_batches" in name:
            continue
        assert not torch.equal(value, initial[name]), name


def test_a_saved_critic_loads_frozen_and_embeds_the_same(tmp_path):
    torch.manual_seed(0)
    critic = SpeakerCritic(SpeakerCriticConfig(), n_speakers=3).eval()
    critic.save_pretrained(tmp_path / "critic")
    loaded = SpeakerCritic.from_pretrained(tmp_path / "critic", device="cpu")
    mel = torch.randn(2, 80, 50) - 5.0
    mask = torch.ones(2, 50)
    mask[1, 30:] = 0.0
    expected = critic.embed(mel, mask)
    assert torch.allclose(loaded.embed(mel, mask), expected, atol=1e-6)
    assert torch.allclose(expected.norm(dim=-1), torch.ones(2), atol=1e-5)
    # Masked frames do not count: changing those beyond the convolutions' reach (7 frames) of the real
    # ones leaves the second embedding as it was.
    changed = mel.clone()
    changed[1, :, 38:] += 3.0
    assert torch.allclose(loaded.embed(changed, mask)[1], expected[1], atol=1e-5)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    with pytest.raises(Exception, match="mel must be"):
        loaded.embed(torch.zeros(1, 40, 10))


def test_the_critic_term_pulls_only_the_conversion(tmp_path):
    torch.manual_seed(0)
    critic = SpeakerCritic(SpeakerCriticConfig(mel=MelConfig())).eval()
    for p in critic.parameters():
        p.requires_grad_(False)
    converted = (torch.randn(3, 80, 40) - 5.0).requires_grad_(True)
    reference = (torch.randn(3, 80, 40) - 5.0).requires_grad_(True)
    loss = critic_loss(critic, converted, reference)
    loss.backward()
    assert 0.0 <= loss.item() <= 2.0
    assert converted.grad is not None and float(converted.grad.abs().sum()) > 0
    assert reference.grad is None  # the target voice is a fixed goal
    # A conversion identical to its reference scores (almost) zero.
    assert float(critic_loss(critic, reference.detach(), reference.detach())) < 1e-5


def test_vc_step_with_the_critic_logs_its_term_and_leaves_the_critic_alone(corpus, trained_critic):
    out, _, _ = trained_critic
    config = experiment(*DENOISE, f"train.speaker_critic.path={out}", "train.lambdas.loss/speaker_critic=1.0")
    model = VCModel(config.model)
    state = State(model, torch.optim.Adam(model.parameters(), lr=1e-3), config.train, Distributed(), NanGuard(5))
    state.critic = SpeakerCritic.from_pretrained(out, device="cpu")
    before = {k: v.clone() for k, v in state.critic.state_dict().items()}
    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    values = train_step(state, batch)
    assert 0.0 < values["loss/speaker_critic"] < 2.0
    for name, value in state.critic.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(ConfigError, match="train.cycle"):
        experiment(f"train.speaker_critic.path={out}")
