"""The content encoder's voice perturbation (voiceconv/training/content_warp.py) and its place in the trainer."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import batch_of, trainer_state

from voiceconv.errors import ConfigError
from voiceconv.training.content_warp import ContentWarpConfig, draw_alpha, warp_content

N_MELS = 80
FLOOR = math.log(1e-5)


def formant_mel(peak_bin: float, batch: int = 4, frames: int = 30) -> torch.Tensor:
    """Log-mels ``(B, 80, T)`` with one broad spectral peak at ``peak_bin`` and silent padding at the end."""
    bins = torch.arange(N_MELS, dtype=torch.float32)
    envelope = -8.0 + 6.0 * torch.exp(-0.5 * ((bins - peak_bin) / 3.0) ** 2)  # (n_mels,)
    mel = envelope[None, :, None].expand(batch, N_MELS, frames).clone()
    mel[..., -5:] = FLOOR  # padding frames at the log floor
    return mel


def test_a_warp_moves_the_formant_and_keeps_padding_at_the_floor():
    mel = formant_mel(peak_bin=30.0)
    config = ContentWarpConfig(alpha=(1.15, 1.15), probability=1.0)
    up = warp_content(mel, config, torch.Generator().manual_seed(0))
    down = warp_content(mel, ContentWarpConfig(alpha=(0.87, 0.87), probability=1.0), torch.Generator().manual_seed(0))
    peak = lambda m: int(m[0, :, 0].argmax())  # noqa: E731
    # Output bin k reads input bin k / alpha: a longer vocal tract (alpha < 1) lowers the formant.
    assert peak(up) == pytest.approx(30 * 1.15, abs=1)
    assert peak(down) == pytest.approx(30 * 0.87, abs=1)
    assert torch.allclose(up[..., -5:], torch.full_like(up[..., -5:], FLOOR))
    assert up.shape == mel.shape


def test_probability_and_range_of_the_draws():
    config = ContentWarpConfig(alpha=(0.8, 1.25), probability=0.7)
    alpha = draw_alpha(20_000, config, torch.Generator().manual_seed(1))
    warped = alpha != 1.0
    assert warped.float().mean().item() == pytest.approx(0.7, abs=0.02)
    assert alpha.min() >= 0.8 and alpha.max() <= 1.25
    # Log-uniform: a warp up and its inverse down are equally likely.
    assert (alpha[warped] > 1.0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    again = draw_alpha(20_000, config, torch.Generator().manual_seed(1))
    assert torch.equal(alpha, again)
    off = warp_content(formant_mel(30.0), ContentWarpConfig(probability=0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(off, formant_mel(30.0))


@pytest.mark.parametrize("field, value", [("alpha", (1.2, 1.1)), ("alpha", (0.0, 1.1)), ("probability", 1.5),
                                          ("boundary", 1.0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"content_warp.{field}"):
        ContentWarpConfig(**{field: value})


def test_only_the_content_input_is_warped_in_training():
    """The trainer feeds the warped mel to the content encoder; the speaker encoder and the target keep the voice."""
    from voiceconv.training.vc_trainer import _encoder_inputs

    state = trainer_state("train.content_warp.probability=1.0")
    mel = formant_mel(30.0, batch=8)
    batch = batch_of(mel)
    inputs = _encoder_inputs(batch, state)
    assert set(inputs) == {"content_mel"}  # the speaker encoder reads batch["mel"], the true voice
    moved = (inputs["content_mel"] - mel).abs().amax(dim=(1, 2))  # (B,)
    assert (moved > 1e-3).all()  # every content input is warped
    assert torch.equal(batch["mel"], formant_mel(30.0, batch=8))  # the target is untouched
    # The same step draws the same warps (exact resume); the next step draws others.
    assert torch.equal(_encoder_inputs(batch, state)["content_mel"], inputs["content_mel"])
    state.step += 1
    assert not torch.equal(_encoder_inputs(batch, state)["content_mel"], inputs["content_mel"])


def test_with_the_channel_on_the_speaker_input_is_the_same_with_or_without_the_warp():
    """The warp draws from its own stream: the speaker encoder's channel-corrupted input does not change."""
    from voiceconv.training.vc_trainer import _encoder_inputs

    batch = batch_of(formant_mel(30.0, batch=8))
    inputs = {name: _encoder_inputs(batch, trainer_state("train.channel.probability=1.0", *overrides))
              for name, overrides in {"plain": [], "warped": ["train.content_warp.probability=1.0"]}.items()}
    assert torch.equal(inputs["plain"]["speaker_mel"], inputs["warped"]["speaker_mel"])
    assert not torch.allclose(inputs["plain"]["content_mel"], inputs["warped"]["content_mel"], atol=1e-3)


def comb_mel(peak_bin: float, spacing: float, batch: int = 2, frames: int = 30) -> torch.Tensor:
    """Log-mels ``(B, 80, T)``: one broad formant at ``peak_bin`` plus a harmonic comb every ``spacing`` bins."""
    bins = torch.arange(N_MELS, dtype=torch.float32)
    comb = 1.5 * torch.cos(2 * math.pi * bins / spacing)  # (n_mels,), harmonics fall on multiples of spacing
    mel = formant_mel(peak_bin, batch, frames)
    mel[..., :-5] += comb[None, :, None]
    return mel


def test_split_envelope_keeps_the_formant_and_leaves_the_comb():
    from voiceconv.training.content_warp import split_envelope

    mel = comb_mel(peak_bin=30.0, spacing=4.0)
    envelope, fine = split_envelope(mel, coefficients=16)
    # A true orthogonal projection onto the first 16 DCT-II coefficients (scipy's orthonormal DCT).
    from scipy.fft import dct, idct

    cepstrum = dct(mel.numpy(), type=2, norm="ortho", axis=1)
    cepstrum[:, 16:] = 0.0
    assert torch.allclose(envelope, torch.from_numpy(idct(cepstrum, type=2, norm="ortho", axis=1)), atol=1e-4)
    assert (envelope * fine).sum(dim=1).abs().max() < 1e-2  # the two parts are orthogonal in every frame
    assert int(envelope[0, :, 0].argmax()) == 30  # the formant is envelope
    expected = 1.5 * torch.cos(2 * math.pi * torch.arange(N_MELS) / 4.0)
    assert torch.corrcoef(torch.stack([fine[0, 5:75, 0], expected[5:75]]))[0, 1] > 0.95  # the comb is fine
    assert fine[..., -5:].abs().max() < 1e-4  # padding (flat at the floor) is all envelope


def test_pitch_warp_moves_the_harmonics_apart_from_the_formant():
    from voiceconv.training.content_warp import split_envelope

    mel = comb_mel(peak_bin=30.0, spacing=4.0, batch=1)
    config = ContentWarpConfig(alpha=(1.0, 1.0), pitch_alpha=(1.25, 1.25), probability=1.0)
    out = warp_content(mel, config, torch.Generator().manual_seed(0))
    envelope, fine = split_envelope(out, coefficients=16)
    assert int(envelope[0, :, 0].argmax()) == 30  # the formant stays where it was
    # The comb's spacing grows by the pitch factor: its autocorrelation peaks at 5 bins, not 4.
    comb = fine[0, 4:40, 0]
    lags = {lag: float((comb[:-lag] * comb[lag:]).mean()) for lag in range(3, 8)}
    assert max(lags, key=lags.get) == 5
    # Equal factors are the one warp of the whole mel, as without pitch_alpha.
    same = ContentWarpConfig(alpha=(1.1, 1.1), pitch_alpha=(1.1, 1.1), probability=1.0)
    whole = ContentWarpConfig(alpha=(1.1, 1.1), probability=1.0)
    assert torch.allclose(warp_content(mel, same, torch.Generator().manual_seed(0)),
                          warp_content(mel, whole, torch.Generator().manual_seed(0)), atol=1e-4)


def test_pitch_draws_are_independent_and_leave_unwarped_utterances_alone():
    from voiceconv.training.content_warp import _draw

    config = ContentWarpConfig(alpha=(0.8, 1.25), pitch_alpha=(0.71, 1.41), probability=0.7)
    alpha, pitch = _draw(20_000, config, torch.Generator().manual_seed(2))
    warped = alpha != 1.0
    assert torch.equal(warped, pitch != 1.0)  # warped together, by different factors
    assert pitch.min() >= 0.71 and pitch.max() <= 1.41
    assert abs(torch.corrcoef(torch.stack([alpha[warped].log(), pitch[warped].log()]))[0, 1]) < 0.05
    # Without pitch_alpha the draws are those of the code before it existed (exact resume of older
    # runs): log-uniform factors first, then the warped mask, from the same generator.
    generator = torch.Generator().manual_seed(2)
    log_alpha = math.log(0.8) + (math.log(1.25) - math.log(0.8)) * torch.rand(20_000, generator=generator)
    before = torch.where(torch.rand(20_000, generator=generator) < 0.7, log_alpha.exp(), torch.ones(20_000))
    plain = ContentWarpConfig(alpha=(0.8, 1.25), probability=0.7)
    assert torch.equal(draw_alpha(20_000, plain, torch.Generator().manual_seed(2)), before)
    assert torch.equal(alpha, before)  # and pitch_alpha's draws come after them
    with pytest.raises(ConfigError, match="content_warp.pitch_alpha"):
        ContentWarpConfig(pitch_alpha=(1.2, 1.1))
    with pytest.raises(ConfigError, match="content_warp.envelope_coefficients"):
        ContentWarpConfig(envelope_coefficients=0)
    with pytest.raises(ConfigError, match="content_warp.envelope_coefficients"):  # no fine structure left
        warp_content(formant_mel(30.0), ContentWarpConfig(pitch_alpha=(0.8, 1.2), envelope_coefficients=N_MELS),
                     torch.Generator().manual_seed(0))


def test_the_trainer_splits_the_warp_and_clamps_at_the_log_floor():
    """``train.content_warp.pitch_alpha`` from the command line reaches the content input, which never goes
    below the mel's log floor although envelope and harmonics move apart at a sharp spectral edge."""
    from voiceconv.training.vc_trainer import _encoder_inputs

    state = trainer_state("train.content_warp.probability=1.0", "train.content_warp.alpha=[1.2,1.2]",
                          "train.content_warp.pitch_alpha=[0.75,0.75]")
    assert state.config.content_warp.pitch_alpha == (0.75, 0.75)
    floor = math.log(state.model.mel_config.log_clamp)
    mel = torch.full((2, N_MELS, 20), floor)
    mel[:, :40] = -5.0  # energy up to bin 40, nothing above: the split rings at the edge
    content = _encoder_inputs(batch_of(mel), state)["content_mel"]
    assert content.min() >= floor - 1e-6
    single = trainer_state("train.content_warp.probability=1.0", "train.content_warp.alpha=[1.2,1.2]")
    assert not torch.allclose(content, _encoder_inputs(batch_of(mel), single)["content_mel"], atol=1e-2)
