"""Cycle consistency (voiceconv/training/cycle.py, VCModel.forward's ``cycle_partner``)."""

from __future__ import annotations

import pytest
import torch
from helpers import batch_of, trainer_state

from voiceconv.errors import ConfigError, VoiceconvError
from voiceconv.models.vc_model import VCModel, masked_l1
from voiceconv.training.cycle import CycleConfig, draw_partners


def small_model(seed: int = 0) -> VCModel:
    """The packaged debug config's model, seeded."""
    torch.manual_seed(seed)
    return trainer_state().model


def test_partners_are_a_share_of_the_batch_never_themselves_and_replayable():
    for batch_size, share, count in [(16, 0.5, 8), (16, 1.0, 16), (5, 0.5, 3), (7, 0.01, 1)]:
        partner = draw_partners(batch_size, CycleConfig(share=share), torch.Generator().manual_seed(3))
        assert partner.shape == (count,) and partner.dtype == torch.long
        assert int(partner.min()) >= 0 and int(partner.max()) < batch_size
        assert not (partner == torch.arange(count)).any(), "an utterance was paired with itself"
    shifts = {int(draw_partners(16, CycleConfig(), torch.Generator().manual_seed(seed))[0]) for seed in range(40)}
    assert len(shifts) > 8  # the partner changes from step to step
    again = [draw_partners(16, CycleConfig(), torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(*again)
    assert torch.equal(draw_partners(1, CycleConfig(), torch.Generator()), torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_bad_share_is_refused(share):
    with pytest.raises(ConfigError, match="cycle.share"):
        CycleConfig(share=share)


def test_cycle_loss_is_the_round_trip_through_the_partners_voice():
    """In eval mode (no posterior sampling) the term equals converting to the partner's voice and back by hand."""
    model = small_model().eval()
    torch.manual_seed(1)
    mel = torch.randn(4, model.mel_config.n_mels, 40) - 5.0
    mask = torch.ones(4, 40)
    mask[1, 30:] = 0.0  # a padded utterance inside the cycled half
    partner = torch.tensor([2, 3])
    with torch.no_grad():
        out = model(mel, mask=mask, cycle_partner=partner)
        plain = model(mel, mask=mask)
        assert "loss/cycle" in out and "loss/cycle" not in plain
        assert torch.allclose(out["loss/rec"], plain["loss/rec"])  # the cycle does not change the main term
        x = model.normalize(mel)
        speaker = model.speaker_encoder(x, mask)
        content, _, content_mask = model.content_encoder(x, mask)
        converted = model.decoder(content[:2], speaker[partner], 40, content_mask[:2])
        again, _, again_mask = model.content_encoder(converted, mask[:2])
        back = model.decoder(again, speaker[:2], 40, again_mask)
        assert out["loss/cycle"] == pytest.approx(float(masked_l1(back, x[:2], mask[:2])), rel=1e-5)
        # The converted mel really is in the partner's voice: it differs from the reconstruction.
        rebuilt = model.decoder(content[:2], speaker[:2], 40, content_mask[:2])
        assert (converted - rebuilt).abs().mean() > 1e-3
    with pytest.raises(VoiceconvError, match="cycle_partner"):
        model(mel, mask=mask, cycle_partner=torch.tensor([0, 4]))


def test_cycle_gradient_reaches_both_encoders_and_the_decoder():
    model = small_model().train()
    mel = torch.randn(4, model.mel_config.n_mels, 32) - 5.0
    out = model(mel, cycle_partner=torch.tensor([1, 2]))
    out["loss/cycle"].backward()
    for name in ("content_encoder", "speaker_encoder", "decoder"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_detached_cycle_has_the_same_value_and_no_gradient_through_the_conversion():
    """``cycle_detach`` (train.cycle.detach_conversion) gives the gradient of a round trip whose converted
    mel is a constant, not that of the full round trip."""
    model = small_model().eval()  # eval: the content code is the mean, so both passes are deterministic
    torch.manual_seed(2)
    mel = torch.randn(4, model.mel_config.n_mels, 32) - 5.0
    partner = torch.tensor([1, 2])

    def gradients(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    full = model(mel, cycle_partner=partner)["loss/cycle"]
    detached = model(mel, cycle_partner=partner, cycle_detach=True)["loss/cycle"]
    assert detached.item() == pytest.approx(full.item(), rel=1e-6)
    x = model.normalize(mel)
    speaker = model.speaker_encoder(x)
    content, _, _ = model.content_encoder(x)
    converted = model.decoder(content[:2], speaker[partner], 32, None).detach()
    again, _, _ = model.content_encoder(converted)
    by_hand = masked_l1(model.decoder(again, speaker[:2], 32, None), x[:2], None)
    expected, got_full = gradients(by_hand), gradients(full)
    got = gradients(model(mel, cycle_partner=partner, cycle_detach=True)["loss/cycle"])
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, expected))
    assert any(not torch.allclose(g, e, atol=1e-6) for g, e in zip(got_full, expected))


def test_code_term_matches_the_converted_code_to_the_source_and_trains_the_conversion():
    """``cycle_code`` (train.cycle.code_consistency): L1 between the content code read off the converted
    mel and the source's own, held fixed; its gradient reaches the conversion (the partner's speaker
    vector) even when the round trip is detached, and never goes through the target."""
    model = small_model().eval()
    torch.manual_seed(3)
    mel = torch.randn(4, model.mel_config.n_mels, 32) - 5.0
    mask = torch.ones(4, 32)
    mask[0, 24:] = 0.0
    partner = torch.tensor([1, 2])
    plain = model(mel, mask=mask, cycle_partner=partner)
    assert "loss/cycle_code" not in plain
    for detach in (False, True):
        out = model(mel, mask=mask, cycle_partner=partner, cycle_detach=detach, cycle_code=True)
        assert out["loss/cycle"].item() == pytest.approx(plain["loss/cycle"].item(), rel=1e-6)
        with torch.no_grad():
            x = model.normalize(mel)
            speaker = model.speaker_encoder(x, mask)
            content, _, content_mask = model.content_encoder(x, mask)
            converted = model.decoder(content[:2], speaker[partner], 32, content_mask[:2])
            again, _, _ = model.content_encoder(converted, mask[:2])
        assert out["loss/cycle_code"].item() == pytest.approx(
            float(masked_l1(again, content[:2], content_mask[:2])), rel=1e-5)
        assert out["loss/cycle_code"].item() > 0

    # The gradient goes through the conversion: the partner's reference changes the term.
    reference = model.normalize(mel).clone().requires_grad_(True)
    out = model(mel, mask=mask, cycle_partner=partner, cycle_detach=True, cycle_code=True,
                speaker_mel=model.denormalize(reference), speaker_mask=mask)
    grad, = torch.autograd.grad(out["loss/cycle_code"], reference)
    assert grad[1:3].abs().sum() > 0  # utterances 1 and 2 are the partners whose voices were used
    assert grad[3].abs().sum() == 0  # utterance 3 is neither a source nor a partner
    assert grad[0].abs().sum() == 0  # utterance 0's voice only decodes the round trip's way back
    detached_cycle, = torch.autograd.grad(
        model(mel, mask=mask, cycle_partner=partner, cycle_detach=True,
              speaker_mel=model.denormalize(reference), speaker_mask=mask)["loss/cycle"], reference)
    assert detached_cycle[2].abs().sum() == 0  # the detached round trip never reaches a partner-only voice
    # The source's code is the fixed target: the term's gradient is that of the by-hand loss whose
    # target is detached, through a conversion that is not.
    def gradients(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    def by_hand(fixed_target: bool):
        x = model.normalize(mel)
        speaker = model.speaker_encoder(x, mask)
        content, _, content_mask = model.content_encoder(x, mask)
        converted = model.decoder(content[:2], speaker[partner], 32, content_mask[:2])
        again, _, _ = model.content_encoder(converted, mask[:2])
        target = content[:2].detach() if fixed_target else content[:2]
        return masked_l1(again, target, content_mask[:2])

    got = gradients(model(mel, mask=mask, cycle_partner=partner, cycle_detach=True, cycle_code=True)["loss/cycle_code"])
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, gradients(by_hand(True))))
    assert any(not torch.allclose(g, e, atol=1e-6) for g, e in zip(got, gradients(by_hand(False))))


def test_code_term_targets_the_posterior_mean_of_the_content_input(monkeypatch):
    """In training the conversion is decoded from a posterior sample, but the target is the mean; with
    ``content_mel`` (warped / channel input) the mean is of that input, the code the conversion came from."""
    from voiceconv.models import vc_model

    model = small_model().train()  # the debug model has no dropout: train mode differs only by sampling
    torch.manual_seed(4)
    mel = torch.randn(4, model.mel_config.n_mels, 32) - 5.0
    content_mel = mel + 0.7 * torch.randn_like(mel)
    partner = torch.tensor([3, 0])
    # A fixed offset stands in for the posterior noise, so the by-hand loss can repeat it.
    monkeypatch.setattr(vc_model, "sample_posterior", lambda mean, logvar: mean + 0.5)
    with torch.no_grad():
        out = model(mel, content_mel=content_mel, cycle_partner=partner, cycle_detach=True, cycle_code=True)
        x, read = model.normalize(mel), model.normalize(content_mel)
        speaker = model.speaker_encoder(x)

        def by_hand(source: torch.Tensor, target_is_sample: bool) -> float:
            mean, _, content_mask = model.content_encoder(source)
            code = mean + 0.5
            converted = model.decoder(code[:2], speaker[partner], 32, content_mask)
            again, _, _ = model.content_encoder(converted)
            return float(masked_l1(again, code[:2] if target_is_sample else mean[:2], None))

        value = out["loss/cycle_code"].item()
        assert value == pytest.approx(by_hand(read, False), rel=1e-5)
        assert value != pytest.approx(by_hand(read, True), rel=1e-3)
        assert value != pytest.approx(by_hand(x, False), rel=1e-3)


def test_trainer_sends_partners_and_weighs_the_term_by_its_lambda(monkeypatch):
    """With train.cycle on, train_step passes partners from its own random stream and logs loss/cycle."""
    from voiceconv.training import vc_trainer

    state = trainer_state("train.cycle.share=0.5", "train.lambdas.loss/cycle=3.0")
    seen = []
    forward = state.model.forward

    detach = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("cycle_partner"))
        detach.append(kwargs.get("cycle_detach"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(state.model, "forward", spy)
    torch.manual_seed(0)
    mel = torch.randn(8, 80, 32) - 5.0
    values = vc_trainer.train_step(state, batch_of(mel))
    assert seen[0] is not None and seen[0].shape == (4,) and detach[0] is False
    assert "loss/cycle" in values and values["loss/cycle"] > 0
    weights = vc_trainer.loss_weights(state.config, ["loss/cycle"], state.step)
    assert weights["loss/cycle"] == 3.0
    state.step -= 1  # the same step draws the same partners (exact resume)
    vc_trainer.train_step(state, batch_of(mel))
    assert torch.equal(seen[0], seen[1])
    detached = trainer_state("train.cycle.share=0.5", "train.cycle.detach_conversion=true")
    monkeypatch.setattr(detached.model, "forward", spy)
    vc_trainer.train_step(detached, batch_of(mel))
    assert detach[-1] is True
    coded = trainer_state("train.cycle.share=0.5", "train.cycle.code_consistency=true",
                          "train.lambdas.loss/cycle_code=2.0")
    codes = []
    coded_forward = coded.model.forward
    monkeypatch.setattr(coded.model, "forward",
                        lambda *a, **k: codes.append(k.get("cycle_code")) or coded_forward(*a, **k))
    values = vc_trainer.train_step(coded, batch_of(mel))
    assert codes[-1] is True and values["loss/cycle_code"] > 0
    assert vc_trainer.loss_weights(coded.config, ["loss/cycle_code"], coded.step)["loss/cycle_code"] == 2.0
    off = trainer_state()
    monkeypatch.setattr(off.model, "forward", spy)
    vc_trainer.train_step(off, batch_of(mel))
    assert seen[-1] is None
