"""Speaker-vector channel invariance (voiceconv/training/speaker_invariance.py, VCModel.forward's ``invariance``)."""

from __future__ import annotations

import pytest
import torch
from helpers import batch_of, trainer_state

from voiceconv.errors import ConfigError, VoiceconvError
from voiceconv.training.speaker_invariance import SpeakerInvarianceConfig, invariance_pair
from voiceconv.training.vc_trainer import train_step


def mels(batch: int = 4, frames: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Smooth over frequency and time like speech, around a log-power of -5.
    noise = torch.randn(batch, 80, frames, generator=generator)
    return noise.cumsum(1).cumsum(2) / 40.0 - 5.0


@pytest.mark.parametrize("share", [0.0, -0.5, 1.01])
def test_bad_share_is_refused(share):
    with pytest.raises(ConfigError, match="speaker_invariance.share"):
        SpeakerInvarianceConfig(share=share)


def test_a_partial_channel_override_keeps_the_terms_own_defaults():
    config = trainer_state("train.speaker_invariance.channel.eq_probability=0.5").config.speaker_invariance
    assert config.channel.eq_probability == 0.5
    assert config.channel.probability == 1.0  # the invariance default, not ChannelConfig's 0.7


def test_pairs_are_the_first_share_of_the_batch_every_one_corrupted_and_replayable():
    state = trainer_state()
    mel_config = state.model.mel_config
    mel, mask = mels(5), torch.ones(5, 40)
    mask[1, 30:] = 0.0
    config = SpeakerInvarianceConfig(share=0.5)
    clean, corrupted, pair_mask = invariance_pair(mel, mask, config, torch.Generator().manual_seed(1), mel_config)
    assert clean.shape == corrupted.shape == (3, 80, 40) and pair_mask.shape == (3, 40)
    assert torch.equal(clean, mel[:3]) and torch.equal(pair_mask, mask[:3])
    for index in range(3):
        assert (corrupted[index] - clean[index]).abs().mean() > 0.05, f"clip {index} left clean"
    # The default channel leaves no clip clean, whatever the draws.
    many = invariance_pair(mels(64, 40, seed=5), None, config, torch.Generator().manual_seed(7), mel_config)
    assert ((many[1] - many[0]).abs().mean(dim=(1, 2)) > 1e-3).all()
    again = invariance_pair(mel, mask, config, torch.Generator().manual_seed(1), mel_config)[1]
    assert torch.equal(corrupted, again)
    other = invariance_pair(mel, mask, config, torch.Generator().manual_seed(2), mel_config)[1]
    assert not torch.equal(corrupted, other)
    smallest = invariance_pair(mel, None, SpeakerInvarianceConfig(share=0.01), torch.Generator(), mel_config)
    assert smallest[0].shape[0] == 1 and smallest[2] is None


def test_loss_is_one_minus_cosine_to_the_clean_vector_with_the_gradient_through_the_corrupted_pass_only():
    model = trainer_state().model.eval()
    mel, mask = mels(4), torch.ones(4, 40)
    clean = mel[:2]
    corrupted = clean + torch.linspace(-2.0, 1.0, 80)[None, :, None]  # a strong tilt, like another microphone
    plain = model(mel, mask=mask)
    assert "loss/speaker_invariance" not in plain
    out = model(mel, mask=mask, invariance=(clean, corrupted, mask[:2]))
    assert torch.allclose(out["loss/rec"], plain["loss/rec"])  # the term leaves the main loss alone
    with torch.no_grad():
        anchor = model.embed(clean, mask[:2])
        vector = model.embed(corrupted, mask[:2])
    expected = (1 - torch.nn.functional.cosine_similarity(vector, anchor, dim=1)).mean()
    assert out["loss/speaker_invariance"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss/speaker_invariance"].item() > 1e-4
    same = model(mel, mask=mask, invariance=(clean, clean.clone(), mask[:2]))["loss/speaker_invariance"]
    assert same.item() == pytest.approx(0.0, abs=1e-6)

    anchor_input = clean.clone().requires_grad_(True)
    corrupted_input = corrupted.clone().requires_grad_(True)
    loss = model(mel, mask=mask, invariance=(anchor_input, corrupted_input, mask[:2]))["loss/speaker_invariance"]
    model.zero_grad(set_to_none=True)
    loss.backward()
    assert anchor_input.grad is None  # the clean vector is a fixed target
    assert corrupted_input.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.speaker_encoder.parameters())
    for name in ("content_encoder", "decoder"):  # sanity: the term never reaches the other networks
        assert all(p.grad is None for p in getattr(model, name).parameters()), name

    with pytest.raises(VoiceconvError, match="invariance"):
        model(mel, mask=mask, invariance=(clean, corrupted[:, :, :30], mask[:2]))


def held_out_invariance(model, pair) -> float:
    """The term on fixed held-out clips and channels, in eval mode."""
    model.eval()
    with torch.no_grad():
        out = model(pair[0], invariance=pair)
    model.train()
    return out["loss/speaker_invariance"].item()


def test_training_with_the_term_makes_held_out_vectors_channel_invariant():
    """The same 20 steps (same batches, same channel draws) with and without the term's weight: with it,
    held-out clips keep their vector through a channel they never saw, far more than without it."""
    results = {}
    for weight in (100.0, 0.0):
        torch.manual_seed(0)
        state = trainer_state("train.speaker_invariance.share=1.0", f"train.lambdas.loss/speaker_invariance={weight}",
                              "train.lr=0.005")
        pair = invariance_pair(mels(6, 40, seed=9), None, SpeakerInvarianceConfig(share=1.0),
                               torch.Generator().manual_seed(4), state.model.mel_config)
        start = held_out_invariance(state.model, pair)
        batch = batch_of(mels(4, 32, seed=3))
        history = [train_step(state, batch)["loss/speaker_invariance"] for _ in range(20)]
        assert all(torch.isfinite(torch.tensor(history)))
        results[weight] = (start, held_out_invariance(state.model, pair))
    (start, trained), (_, untrained) = results[100.0], results[0.0]
    assert trained < 0.25 * untrained and trained < 0.25 * start, results
