"""The speaker critic (voiceconv/models/speaker_critic.py) and the VC term it drives (train.speaker_critic)."""

from __future__ import annotations

import pytest
import torch
from test_train import (
    DENOISE,
    _one_thread,  # noqa: F401 -- the same autouse one-thread fixture
    experiment,
    make_corpus,
)

from voiceconv.errors import ConfigError, VoiceconvError
from voiceconv.evaluation.metrics import equal_error_rate
from voiceconv.features import MelConfig
from voiceconv.models.speaker_critic import SpeakerCritic, SpeakerCriticConfig
from voiceconv.models.vc_model import VCModel
from voiceconv.training import vc_trainer
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import Distributed
from voiceconv.training.loop import NanGuard
from voiceconv.training.speaker_critic import CriticTrainConfig, critic_loss, held_out_trials, train_critic
from voiceconv.training.vc_trainer import State, train_step


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("critic_corpus"))


@pytest.fixture(scope="module")
def trained_critic(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("critic") / "critic"
    config = CriticTrainConfig(steps=80, batch_size=16, segment_frames=64, lr=3e-3, n_val_speakers=2, log_every=20)
    torch.manual_seed(0)
    critic = SpeakerCritic(SpeakerCriticConfig(mel=PreparedCorpus(corpus).mel_config), n_speakers=6)
    initial = {k: v.clone() for k, v in critic.state_dict().items()}
    critic, scores, held_out = train_critic(corpus, config, critic=critic, device="cpu")
    scores["val_eer"] = equal_error_rate(*held_out_trials(critic, PreparedCorpus(corpus), held_out))[0]
    critic.save_pretrained(out)
    return out, scores, initial


def test_critic_training_learns_to_tell_held_out_speakers_apart_and_moves_every_parameter(trained_critic):
    out, scores, initial = trained_critic
    assert scores["loss_last"] < 0.6 * scores["loss_first"], scores
    # The two held-out speakers were never trained on; their utterances still group by voice.
    assert scores["val_eer"] < 0.2, scores
    trained = SpeakerCritic.from_pretrained(out, device="cpu").state_dict()
    assert "centres" not in trained  # the class centres are training-only
    assert set(trained) == set(initial) - {"centres"}
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


def test_capped_gaps_pull_no_harder_than_a_mean_gap_and_small_gaps_pull_as_before():
    torch.manual_seed(0)
    critic = SpeakerCritic(SpeakerCriticConfig(mel=MelConfig())).eval()
    for p in critic.parameters():
        p.requires_grad_(False)
    reference = torch.randn(4, 80, 40) - 5.0
    # Two conversions near their references, two far from them: unequal gaps.
    converted = torch.cat([reference[:2] + 0.05 * torch.randn(2, 80, 40), torch.randn(2, 80, 40) - 5.0])

    def per_pair_gradients(cap: bool):
        x = converted.clone().requires_grad_(True)
        loss = critic_loss(critic, x, reference, cap_large_gaps=cap)
        loss.backward()
        return loss, x.grad.flatten(1).norm(dim=1)  # (4,)

    with torch.no_grad():
        produced, target = critic.embed(converted), critic.embed(reference)
        gap = 1.0 - (produced * target).sum(-1)
    assert gap[2:].min() > gap.mean() > gap[:2].max()  # the set-up: two gaps above the mean, two below
    plain_loss, plain = per_pair_gradients(False)
    capped_loss, capped = per_pair_gradients(True)
    assert torch.allclose(plain_loss, gap.mean())
    # Pairs below the mean keep their pull; the far ones are scaled by mean / gap and add the mean gap each.
    assert torch.allclose(capped[:2], plain[:2], rtol=1e-5)
    assert torch.allclose(capped[2:], plain[2:] * gap.mean() / gap[2:], rtol=1e-4)
    assert torch.allclose(capped_loss, (gap[:2].sum() + 2 * gap.mean()) / 4, rtol=1e-5)
    # With equal gaps (one pair repeated) the cap changes nothing.
    repeated_reference, repeated_converted = reference[:1].expand(4, -1, -1), converted[2:3].expand(4, -1, -1)
    assert torch.allclose(critic_loss(critic, repeated_converted, repeated_reference, cap_large_gaps=True),
                          critic_loss(critic, repeated_converted, repeated_reference))


def test_vc_step_feeds_the_critic_raw_conversions_and_their_partners_and_leaves_it_alone(
        corpus, trained_critic, monkeypatch):
    out, _, _ = trained_critic
    config = experiment(*DENOISE, f"train.speaker_critic.path={out}", "train.lambdas.loss/speaker_critic=1.0")
    model = VCModel(config.model)
    # Non-trivial statistics, so that a missing (or doubled) denormalisation would show.
    model.set_normalization(torch.linspace(-9.0, -3.0, 80), torch.linspace(1.5, 3.0, 80))
    state = State(model, torch.optim.Adam(model.parameters(), lr=1e-3), config.train, Distributed(), NanGuard(5))
    state.critic = SpeakerCritic.from_pretrained(out, device="cpu")
    before = {k: v.clone() for k, v in state.critic.state_dict().items()}
    # Segments longer than every utterance: rows end in padding, so the masks matter.
    batch = SegmentBatcher(PreparedCorpus(corpus), 160, 8, seed=0, with_reference=True).batch(0)
    assert float(batch["mask"].min()) == 0.0
    calls = []
    original_loss, original_forward = vc_trainer.critic_loss, VCModel.forward

    def spy_forward(self, *args, **kwargs):
        result = original_forward(self, *args, **kwargs)
        calls.append({"partner": kwargs["cycle_partner"].clone(), "normalised": result["cycle_converted"].detach()})
        return result

    def spy_loss(critic, converted, reference, converted_mask, reference_mask, cap_large_gaps):
        calls[-1].update(converted=converted.detach(), reference=reference, converted_mask=converted_mask,
                         reference_mask=reference_mask, cap_large_gaps=cap_large_gaps)
        return original_loss(critic, converted, reference, converted_mask, reference_mask, cap_large_gaps)

    monkeypatch.setattr(VCModel, "forward", spy_forward)
    monkeypatch.setattr(vc_trainer, "critic_loss", spy_loss)
    values = train_step(state, batch)
    (call,) = calls
    partner, n = call["partner"], call["partner"].numel()
    assert torch.allclose(call["converted"], call["normalised"] * model.mel_std[:, None] + model.mel_mean[:, None],
                          atol=1e-2)
    assert torch.equal(call["reference"], batch["mel"][partner])
    assert torch.equal(call["converted_mask"], batch["mask"][:n])
    assert torch.equal(call["reference_mask"], batch["mask"][partner])
    assert call["cap_large_gaps"] is False  # the config's default reaches the term
    assert abs(values["loss/speaker_critic"] - float(original_loss(
        state.critic, call["converted"], call["reference"], call["converted_mask"], call["reference_mask"]))) < 0.05
    for name, value in state.critic.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(ConfigError, match="train.cycle"):
        experiment(f"train.speaker_critic.path={out}")
    with pytest.raises(ConfigError, match="decoder_gradient.*'conditioning'"):
        experiment(*DENOISE, f"train.speaker_critic.path={out}", "train.speaker_critic.decoder_gradient=affine")


def test_the_critic_term_moves_the_model(corpus, trained_critic):
    """With the term's weight at 0 and at 1, one step from the same weights gives different decoders."""
    out, _, _ = trained_critic
    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    decoders = []
    for weight in (0.0, 1.0):
        config = experiment(*DENOISE, f"train.speaker_critic.path={out}", f"train.lambdas.loss/speaker_critic={weight}")
        torch.manual_seed(0)
        model = VCModel(config.model)
        state = State(model, torch.optim.SGD(model.parameters(), lr=0.1), config.train, Distributed(), NanGuard(5))
        state.critic = SpeakerCritic.from_pretrained(out, device="cpu")
        train_step(state, batch)
        decoders.append(torch.cat([p.detach().flatten() for p in model.decoder.parameters()]))
    assert not torch.allclose(decoders[0], decoders[1])


def test_without_content_gradient_the_term_reaches_the_decoder_but_not_the_content_encoder(corpus, trained_critic):
    out, _, _ = trained_critic
    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    grads = {}
    for weight in (0.0, 1.0):
        config = experiment(*DENOISE, f"train.speaker_critic.path={out}", "train.speaker_critic.content_gradient=false",
                            f"train.lambdas.loss/speaker_critic={weight}", "train.grad_clip=0")
        torch.manual_seed(0)
        model = VCModel(config.model)
        state = State(model, torch.optim.SGD(model.parameters(), lr=0.0), config.train, Distributed(), NanGuard(5))
        state.critic = SpeakerCritic.from_pretrained(out, device="cpu")
        train_step(state, batch)
        grads[weight] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    content = [n for n in grads[0.0] if n.startswith("content_encoder.")]
    decoder = [n for n in grads[0.0] if n.startswith("decoder.")]
    assert content and decoder
    for name in content:
        assert torch.allclose(grads[0.0][name], grads[1.0][name], atol=1e-6), name
    assert any(not torch.allclose(grads[0.0][n], grads[1.0][n]) for n in decoder)


@pytest.mark.parametrize("decoder_gradient", ["false", "conditioning"])
@pytest.mark.parametrize("content_gradient", [False, True])
def test_held_decoder_the_term_reaches_at_most_the_adain_projections(corpus, trained_critic, content_gradient,
                                                                      decoder_gradient):
    """decoder_gradient off: the critic moves the speaker vectors (and, with content_gradient, the content encoder),
    never how the decoder renders a code; "conditioning": of the decoder, only its AdaIN speaker projections."""
    out, _, _ = trained_critic
    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    grads, losses = {}, {}
    for weight in (0.0, 1.0):
        config = experiment(*DENOISE, f"train.speaker_critic.path={out}",
                            f"train.speaker_critic.content_gradient={str(content_gradient).lower()}",
                            f"train.speaker_critic.decoder_gradient={decoder_gradient}",
                            f"train.lambdas.loss/speaker_critic={weight}", "train.grad_clip=0")
        torch.manual_seed(0)
        model = VCModel(config.model)
        state = State(model, torch.optim.SGD(model.parameters(), lr=0.0), config.train, Distributed(), NanGuard(5))
        state.critic = SpeakerCritic.from_pretrained(out, device="cpu")
        losses[weight] = train_step(state, batch)["loss/speaker_critic"]
        grads[weight] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    # The same conversions are judged either way (the held pass is the same decoder, numerically).
    assert losses[0.0] == pytest.approx(losses[1.0]) and losses[1.0] > 0
    groups = {part: [n for n in grads[0.0] if n.startswith(part + ".")]
              for part in ("content_encoder", "decoder", "speaker_encoder")}
    assert all(groups.values()), groups
    projections = [n for n in groups["decoder"] if ".affine." in n]
    assert projections and len(projections) < len(groups["decoder"])
    for name in groups["decoder"]:
        if decoder_gradient == "conditioning" and name in projections:
            continue
        assert torch.allclose(grads[0.0][name], grads[1.0][name], atol=1e-6), name
    projections_moved = any(not torch.allclose(grads[0.0][n], grads[1.0][n], atol=1e-6) for n in projections)
    assert projections_moved == (decoder_gradient == "conditioning")
    assert any(not torch.allclose(grads[0.0][n], grads[1.0][n]) for n in groups["speaker_encoder"])
    content_moved = any(not torch.allclose(grads[0.0][n], grads[1.0][n], atol=1e-6) for n in groups["content_encoder"])
    assert content_moved == content_gradient


def test_an_unknown_decoder_gradient_is_refused_not_read_as_held():
    """A direct caller's typo must not silently mean "decoder held"."""
    torch.manual_seed(0)
    model = VCModel(experiment(*DENOISE).model)
    mel = torch.randn(2, model.config.mel.n_mels, 32)
    with pytest.raises(VoiceconvError, match="'conditioning'"):
        model(mel, cycle_partner=torch.tensor([1, 0]), critic_decoder_gradient="Conditioning")
