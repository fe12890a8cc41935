"""Vocoder inference: frame alignment, lengths, chunking, Griffin-Lim, checkpoints and HiFi-GAN import."""

from __future__ import annotations

import copy
import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import synthetic_voice

from voiceconv.errors import CheckpointError, VoiceconvError
from voiceconv.features import MelConfig, MelMismatchError, MelSpectrogram, mel_basis
from voiceconv.vocoder.generator import ISTFTGeneratorConfig
from voiceconv.vocoder.hifigan import HIFIGAN_V1, HIFIGAN_V3, HiFiGANConfig
from voiceconv.vocoder.jik876 import import_jik876
from voiceconv.vocoder.model import GRIFFIN_LIM_WARNING, Vocoder, VocoderConfig
from voiceconv.vocoder.quality import (
    frame_rate_modulation_db,
    log_mel_l1,
    multi_resolution_stft_distance,
    pesq_wideband,
)
from voiceconv.vocoder.spectral import istft, overlap_add, stft

MEL = MelConfig()
HOP = MEL.hop_length

# Small versions of each generator: same kernels, dilations and rates (so the same receptive field
# and alignment), far fewer channels, so every test runs in well under a second.
TINY = {
    "istft": VocoderConfig(generator="istft", istft=ISTFTGeneratorConfig(dim=32, intermediate_dim=64)),
    "istft_consistent": VocoderConfig(generator="istft", istft=ISTFTGeneratorConfig(
        dim=32, intermediate_dim=64, magnitude_prior=True, consistency_iters=3)),
    "hifigan_v1": VocoderConfig(generator="hifigan", hifigan=HiFiGANConfig(upsample_initial_channel=32)),
    "hifigan_v3": VocoderConfig(generator="hifigan", hifigan=HiFiGANConfig(
        resblock="2", upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8), upsample_initial_channel=32,
        resblock_kernel_sizes=(3, 5, 7), resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)))),
}


def lively(vocoder: Vocoder) -> Vocoder:
    """Untrained generators whisper (HiFi-GAN's N(0, 0.01) init, Vocos' small head); these weights speak up."""
    torch.manual_seed(1)
    for name, tensor in vocoder.generator.named_parameters():
        if name.endswith("parametrizations.weight.original0"):  # HiFi-GAN weight norm magnitude g
            tensor.data.uniform_(0.7, 1.4)
        elif name == "head.weight":  # iSTFT head: log-magnitude and phase that vary with the input
            tensor.data.normal_(0.0, 0.1)
    return vocoder.eval()


def voice_mel(seconds: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic voice trimmed to whole frames and its log-mel: ``(T * hop,)``, ``(n_mels, T)``."""
    audio = synthetic_voice(seconds=seconds, seed=seed)
    audio = torch.from_numpy(audio[: len(audio) // HOP * HOP])
    return audio, MelSpectrogram(MEL)(audio)


# ------------------------------------------------------------------------------ alignment, lengths


@pytest.mark.parametrize("win_length", [1024, 800])
def test_stft_istft_round_trip_is_exact_on_the_mel_grid(win_length):
    mel = MelConfig(win_length=win_length)
    audio = torch.randn(2, 37 * HOP)
    window = torch.hann_window(win_length)
    spec = stft(audio, mel.n_fft, HOP, window)
    assert spec.shape == (2, mel.n_fft // 2 + 1, 37)  # one frame per hop, like the mel
    # The magnitude is the mel front end's own magnitude: same frames, same positions.
    assert torch.allclose(spec.abs(), MelSpectrogram(mel).magnitude(audio), atol=1e-3)
    rebuilt = istft(spec, mel.n_fft, HOP, window)
    assert rebuilt.shape == audio.shape
    assert torch.allclose(rebuilt, audio, atol=1e-5)  # edges included


def test_istft_head_places_frames_where_the_mel_took_them():
    """Feed the generator's head the exact spectrum of a voice: its output is that voice, sample for sample."""
    vocoder = Vocoder(TINY["istft"]).eval()
    audio, mel = voice_mel()
    exact = stft(audio[None], MEL.n_fft, HOP, torch.hann_window(MEL.win_length))
    vocoder.generator.spectrum = lambda _mel: exact  # bypass the (untrained) backbone
    output = vocoder(mel[None])[0]
    assert output.shape == audio.shape
    assert torch.allclose(output, audio, atol=1e-5)
    # A half-hop shift (torch.istft's centre convention) would be far off.
    assert (torch.roll(output, HOP // 2) - audio).abs().max() > 0.05


def test_magnitude_prior_starts_from_the_mels_own_spectral_envelope():
    """With the prior and a zero head, the predicted magnitude maps back onto the input mel."""
    config = VocoderConfig(istft=ISTFTGeneratorConfig(dim=32, intermediate_dim=64, magnitude_prior=True))
    vocoder = Vocoder(config).eval()
    torch.nn.init.zeros_(vocoder.generator.head.weight)
    torch.nn.init.zeros_(vocoder.generator.head.bias)
    _, mel = voice_mel()
    with torch.no_grad():
        magnitude = vocoder.generator.spectrum(mel[None]).abs()[0]  # (n_bins, T)
    basis = vocoder.generator.inverse_basis.pinverse()  # back to the mel filterbank, (n_mels, n_bins)
    remapped = torch.log(torch.clamp(basis @ magnitude, min=MEL.log_clamp))
    assert (remapped - mel).abs().mean() < 0.05
    # Without the prior the same zero head predicts a flat unit magnitude: nowhere near the mel.
    plain = Vocoder(VocoderConfig(istft=ISTFTGeneratorConfig(dim=32, intermediate_dim=64))).eval()
    torch.nn.init.zeros_(plain.generator.head.weight)
    torch.nn.init.zeros_(plain.generator.head.bias)
    with torch.no_grad():
        flat = plain.generator.spectrum(mel[None]).abs()[0]
    assert (torch.log(torch.clamp(basis @ flat, min=MEL.log_clamp)) - mel).abs().mean() > 1.0


@pytest.mark.parametrize("name", [*TINY, "griffin_lim"])
@pytest.mark.parametrize("frames", [1, 7, 33])
def test_every_generator_outputs_frames_times_hop_samples(name, frames):
    config = TINY.get(name) or VocoderConfig(generator="griffin_lim")
    vocoder = Vocoder(config).eval()
    mel = torch.randn(2, MEL.n_mels, frames) - 5.0
    assert vocoder.decode(mel).shape == (2, frames * HOP)
    assert vocoder.decode(mel[0]).shape == (frames * HOP,)


# ------------------------------------------------------------------------------------- Griffin-Lim


def inconsistency(spec: torch.Tensor) -> float:
    """Relative distance of a complex spectrogram from the STFT of its own resynthesis (0 = a real STFT)."""
    window = torch.hann_window(MEL.win_length)
    rebuilt = stft(istft(spec, MEL.n_fft, HOP, window), MEL.n_fft, HOP, window)
    return float((rebuilt - spec).abs().norm() / spec.abs().norm())


def test_consistency_iterations_make_the_predicted_spectrum_consistent():
    """The generator's Griffin-Lim refinement keeps its magnitude and moves its phase towards a real STFT."""
    _, mel = voice_mel(seconds=0.6)
    spectra = {}
    for iters in (0, 1, 8):
        config = VocoderConfig(istft=ISTFTGeneratorConfig(
            dim=32, intermediate_dim=64, magnitude_prior=True, consistency_iters=iters))
        torch.manual_seed(0)  # the same weights for every iteration count
        vocoder = lively(Vocoder(config))
        with torch.no_grad():
            spectra[iters] = vocoder.generator.spectrum(mel[None])
    # Phases change, magnitudes do not, except in bins below the refinement's silence floor (1e-4).
    audible = spectra[0].abs() > 1e-3
    assert audible.float().mean() > 0.5
    torch.testing.assert_close(spectra[8].abs()[audible], spectra[0].abs()[audible], rtol=1e-4, atol=0.0)
    scores = {iters: inconsistency(spec) for iters, spec in spectra.items()}
    assert scores[8] < scores[1] < scores[0]
    assert scores[8] < 0.5 * scores[0]


def test_decoding_refines_the_phase_as_training_does():
    """Without autograd the refinement takes a faster path; it gives the waveform training computes."""
    _, mel = voice_mel(seconds=0.6)
    config = VocoderConfig(istft=ISTFTGeneratorConfig(
        dim=32, intermediate_dim=64, magnitude_prior=True, consistency_iters=8))
    torch.manual_seed(0)
    vocoder = lively(Vocoder(config))
    with torch.inference_mode():
        decoded = vocoder.generator(mel[None])
    trained = vocoder.generator(mel[None].clone().requires_grad_()).detach()
    assert (decoded - trained).norm() / trained.norm() < 1e-4
    # The faster path is a different computation, not the same one run twice.
    assert not torch.equal(decoded, trained)


def test_mel_projection_gives_the_predicted_magnitude_exactly_the_input_mel():
    _, mel = voice_mel(seconds=0.6)
    basis = torch.from_numpy(mel_basis(MEL))
    errors = {}
    for projection in (False, True):
        torch.manual_seed(0)
        vocoder = lively(Vocoder(VocoderConfig(istft=ISTFTGeneratorConfig(
            dim=32, intermediate_dim=64, magnitude_prior=True, mel_projection=projection))))
        with torch.no_grad():
            magnitude = vocoder.generator.spectrum(mel[None]).abs()[0]  # (n_bins, T)
        rebuilt = torch.log((basis @ magnitude).clamp(min=MEL.log_clamp))  # its log-mel, (n_mels, T)
        errors[projection] = float((rebuilt - mel).abs().mean())
    # The head's random residual moves the band energies; the projection puts them back (up to the
    # few bins clamped at zero).
    assert errors[False] > 0.05
    assert errors[True] < 0.1 * errors[False]


def test_overlap_add_of_frames_as_rows_equals_fold_exactly():
    """The decoding path's overlap-add (frames as rows, added through views of the signal) is exact."""
    from voiceconv.vocoder.spectral import _overlap_add_rows

    for frames in (torch.randn(2, 9, 1024), torch.randn(1, 1, 1024)):
        assert torch.equal(_overlap_add_rows(frames, 256), overlap_add(frames.transpose(1, 2), 256))


def test_fast_overlap_add_equals_fold():
    frames = torch.randn(2, 1024, 9)
    fast = overlap_add(frames, 256)
    length = 8 * 256 + 1024
    folded = F.fold(frames, output_size=(1, length), kernel_size=(1, 1024), stride=(1, 256))[:, 0, 0]
    torch.testing.assert_close(fast, folded)
    odd = overlap_add(frames, 300)  # 300 does not divide 1024: the fold path
    assert odd.shape == (2, 8 * 300 + 1024)
    torch.testing.assert_close(odd[:, :300], frames[:, :300, 0])  # only frame 0 covers the first hop


def test_griffin_lim_iterations_reconstruct_the_spectrum_and_warn_once(caplog):
    audio, mel = voice_mel(0.6)
    rough = Vocoder.griffin_lim(MEL, n_iter=0, device="cpu")
    refined = Vocoder.griffin_lim(MEL, n_iter=32, device="cpu")
    assert not refined.is_neural and refined.n_parameters() == 0
    with caplog.at_level(logging.WARNING, logger="voiceconv.vocoder.model"):
        output = refined.decode(mel)
        refined.decode(mel)
    assert [r.message for r in caplog.records].count(GRIFFIN_LIM_WARNING) == 1
    assert output.shape == audio.shape
    # 32 iterations make the phase consistent: the resynthesis's mel and spectrum approach the original's.
    assert log_mel_l1(audio, output) < 0.6 * log_mel_l1(audio, rough.decode(mel))
    assert multi_resolution_stft_distance(audio, output) < multi_resolution_stft_distance(audio, rough.decode(mel))
    assert log_mel_l1(audio, output) < 0.5


def test_quality_metrics_are_zero_for_identical_audio_and_grow_with_noise():
    audio, _ = voice_mel()
    assert log_mel_l1(audio, audio) == 0.0
    assert multi_resolution_stft_distance(audio, audio) == pytest.approx(0.0, abs=1e-6)
    noisy = audio + 0.01 * torch.randn_like(audio)
    noisier = audio + 0.1 * torch.randn_like(audio)
    assert 0 < log_mel_l1(audio, noisy) < log_mel_l1(audio, noisier)
    assert 0 < multi_resolution_stft_distance(audio, noisy) < multi_resolution_stft_distance(audio, noisier)


def test_frame_rate_modulation_flags_a_signal_that_pulses_at_the_hop_rate():
    audio, _ = voice_mel(seconds=2.0)
    t = torch.arange(audio.shape[0]) / MEL.sample_rate
    pulsing = audio * (1.0 + 0.5 * torch.cos(2 * math.pi * (MEL.sample_rate / HOP) * t))
    clean = frame_rate_modulation_db(audio, MEL.sample_rate, HOP)
    buzzing = frame_rate_modulation_db(pulsing, MEL.sample_rate, HOP)
    assert buzzing > clean + 15.0


def test_pesq_is_near_its_ceiling_for_identical_audio_and_falls_with_noise():
    pytest.importorskip("pesq")
    audio, _ = voice_mel(seconds=2.0)
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(audio.shape[0]).astype(np.float32))
    scale = audio.std() / noise.std()
    clean = pesq_wideband(audio, audio, MEL.sample_rate)
    slightly = pesq_wideband(audio, audio + 0.03 * scale * noise, MEL.sample_rate)
    very = pesq_wideband(audio, audio + 0.5 * scale * noise, MEL.sample_rate)
    assert clean > 4.4 and clean > slightly > very


# ---------------------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("name", list(TINY))
def test_chunked_decoding_matches_one_piece(name):
    vocoder = lively(Vocoder(TINY[name]))
    mel = torch.randn(2, MEL.n_mels, 300) * 2  # zero-mean, so no constant offset dominates the untrained nets
    whole = vocoder.decode(mel, chunk_frames=100_000)
    chunked = vocoder.decode(mel, chunk_frames=40)  # 8 chunks, 7 seams
    assert chunked.shape == whole.shape
    assert whole.std(dim=-1).min() > 1e-2  # a varying signal, not a constant
    # Context >= receptive field: the chunks agree with one-piece decoding everywhere, seams included.
    assert (chunked - whole).abs().max() < 1e-4 * whole.abs().max()


@pytest.mark.parametrize("name", list(TINY))
def test_receptive_field_bound_holds(name):
    """Changing one input frame changes no output sample beyond the declared receptive field."""
    vocoder = lively(Vocoder(TINY[name]))
    field = vocoder.generator.receptive_field_frames
    mel = torch.randn(1, MEL.n_mels, 2 * field + 41) - 5.0
    centre = field + 20
    changed = mel.clone()
    changed[..., centre] += 3.0
    with torch.no_grad():
        diff = (vocoder(changed) - vocoder(mel)).abs()[0]
    affected = torch.nonzero(diff > 1e-6).flatten()
    assert len(affected) > 0
    assert affected.min() >= (centre - field) * HOP and affected.max() < (centre + field + 1) * HOP


def test_bf16_decoding_is_close_to_float32():
    vocoder = Vocoder(TINY["istft"]).eval()
    mel = torch.randn(1, MEL.n_mels, 50) - 5.0
    full = vocoder.decode(mel)
    half = vocoder.decode(mel, dtype=torch.bfloat16)
    assert half.dtype == torch.float32
    assert (half - full).norm() / full.norm() < 0.1


@pytest.mark.parametrize("name", ["istft_consistent", "hifigan_v1"])
def test_bf16_decoding_computes_what_autocast_computes_from_the_float32_weights(name):
    """Decoding keeps a copy of the weights in bf16 rather than casting them per call; the waveform is the same."""
    torch.manual_seed(0)
    vocoder = lively(Vocoder(TINY[name]))
    mel = torch.randn(1, MEL.n_mels, 40) - 5.0

    def autocast_of_float32():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return vocoder.generator(mel).float().clamp(-1.0, 1.0)

    half = vocoder.decode(mel, dtype=torch.bfloat16)
    assert torch.equal(half, autocast_of_float32())
    assert not torch.equal(half, vocoder.decode(mel, dtype=torch.float32))
    if name == "hifigan_v1":
        # A generator still weight-normalised computes its weights on each call: nothing to keep.
        assert vocoder._low_precision is None
        vocoder.generator.remove_weight_norm()  # what loading a checkpoint does
        half = vocoder.decode(mel, dtype=torch.bfloat16)
        assert torch.equal(half, autocast_of_float32())
    kept = vocoder._low_precision[1]
    weights = [m.weight for m in kept.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear))]
    assert weights and all(weight.dtype == torch.bfloat16 for weight in weights)
    assert torch.equal(vocoder.decode(mel, dtype=torch.bfloat16), half)
    assert vocoder._low_precision[1] is kept  # made once, not per call
    assert copy.deepcopy(vocoder)._low_precision is None  # pickles and copies leave it out ...
    assert vocoder._low_precision[1] is kept  # ... without dropping the original's
    # A weight changed in place (as an optimizer step does) is seen by the next decode ...
    with torch.no_grad():
        next(p for n, p in vocoder.generator.named_parameters() if n.endswith("bias")).add_(0.5)
    changed = vocoder.decode(mel, dtype=torch.bfloat16)
    assert not torch.equal(changed, half)
    assert torch.equal(changed, autocast_of_float32())
    if name != "hifigan_v1":  # a folded HiFi-GAN loads no more checkpoints (they carry weight norm)
        # ... and so are weights loaded from another vocoder.
        torch.manual_seed(1)
        other = lively(Vocoder(TINY[name]))
        vocoder.load_generator_state(other.generator_state_dict())
        assert torch.equal(vocoder.decode(mel, dtype=torch.bfloat16), other.decode(mel, dtype=torch.bfloat16))
    # A write through .data bypasses the version counters; eval() (as after any training) starts afresh.
    vocoder.decode(mel, dtype=torch.bfloat16)
    for parameter in vocoder.generator.parameters():
        parameter.data.mul_(1.1)
    vocoder.eval()
    assert vocoder._low_precision is None
    assert torch.equal(vocoder.decode(mel, dtype=torch.bfloat16), autocast_of_float32())
    # The copy is not part of the model: nothing of it is saved, and moving the model drops it.
    assert set(vocoder.state_dict()) == {f"generator.{key}" for key in vocoder.generator.state_dict()}
    vocoder.to("cpu")
    assert vocoder._low_precision is None


def test_bf16_decoding_of_a_vocoder_built_under_inference_mode():
    """Inference tensors have no version counter to key a copy on: the generator runs under autocast itself."""
    torch.manual_seed(0)
    with torch.inference_mode():
        vocoder = Vocoder(TINY["istft_consistent"]).eval()
    mel = torch.randn(1, MEL.n_mels, 40) - 5.0
    half = vocoder.decode(mel, dtype=torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(half, vocoder.generator(mel).float().clamp(-1.0, 1.0))


def test_inference_dtype_is_used_only_where_bf16_is_native(monkeypatch):
    """A vocoder configured for bf16 decodes under bf16 autocast on native hardware, else in float32."""
    import dataclasses

    from voiceconv.vocoder import model as vocoder_model

    config = dataclasses.replace(TINY["istft"], inference_dtype="bfloat16")
    torch.manual_seed(0)
    vocoder = Vocoder(config).eval()
    mel = torch.randn(1, MEL.n_mels, 50) - 5.0
    full = vocoder.decode(mel, dtype=torch.float32)
    half = vocoder.decode(mel, dtype=torch.bfloat16)
    assert not torch.equal(full, half)
    monkeypatch.setattr(vocoder_model, "native_bf16", lambda device: True)
    assert vocoder.inference_dtype == torch.bfloat16
    assert torch.equal(vocoder.decode(mel), half)
    monkeypatch.setattr(vocoder_model, "native_bf16", lambda device: False)
    assert vocoder.inference_dtype is None
    assert torch.equal(vocoder.decode(mel), full)
    with pytest.raises(ValueError, match="inference_dtype"):
        dataclasses.replace(TINY["istft"], inference_dtype="float16")


def test_decode_rejects_wrong_shapes_and_non_finite_input():
    vocoder = Vocoder(TINY["istft"]).eval()
    with pytest.raises(VoiceconvError, match="n_mels=80"):
        vocoder.decode(torch.zeros(1, 40, 10))
    with pytest.raises(VoiceconvError, match="NaN"):
        vocoder.decode(torch.full((80, 10), float("nan")))


# ------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name", list(TINY))
def test_save_then_load_gives_the_same_waveform(tmp_path, name):
    vocoder = lively(Vocoder(TINY[name]))
    mel = torch.randn(1, MEL.n_mels, 20) - 5.0
    vocoder.save_pretrained(tmp_path / "voc")
    loaded = Vocoder.from_pretrained(tmp_path / "voc", device="cpu")
    assert loaded.config.to_dict() == vocoder.config.to_dict() and loaded.is_neural
    # HiFi-GAN is loaded with weight norm folded into plain weights: equal up to float rounding.
    assert torch.allclose(loaded.decode(mel), vocoder.decode(mel), atol=1e-5)


def test_folded_hifigan_saves_the_same_weights(tmp_path):
    vocoder = lively(Vocoder(TINY["hifigan_v1"]))
    mel = torch.randn(1, MEL.n_mels, 12) - 5.0
    vocoder.save_pretrained(tmp_path / "a")
    loaded = Vocoder.from_pretrained(tmp_path / "a", device="cpu")  # folded
    loaded.save_pretrained(tmp_path / "b")  # re-derives weight_g / weight_v from the folded weights
    again = Vocoder.from_pretrained(tmp_path / "b", device="cpu")
    assert torch.allclose(again.decode(mel), vocoder.decode(mel), atol=1e-5)


def test_missing_default_vocoder_raises_a_clear_error(tmp_path, monkeypatch):
    import voiceconv.pretrained

    monkeypatch.setattr(voiceconv.pretrained, "default_vocoder_dir", lambda: tmp_path / "none")
    with pytest.raises(CheckpointError, match="griffin_lim"):
        Vocoder.from_pretrained()


def test_weights_that_do_not_fit_the_config_are_rejected(tmp_path):
    Vocoder(TINY["istft"]).save_pretrained(tmp_path / "voc")
    meta = json.loads((tmp_path / "voc" / "config.json").read_text())
    meta["config"]["istft"]["dim"] = 48
    (tmp_path / "voc" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        Vocoder.from_pretrained(tmp_path / "voc", device="cpu")


# --------------------------------------------------------------------------- HiFi-GAN (jik876) import


def jik876_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the jik876 layout, built from the config alone (not from our module)."""
    rng = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, shape: tuple[int, int, int]) -> None:
        # The magnitudes g deliberately differ from ||v||, so only a correct w = g v / ||v|| matches.
        sd[f"{name}.weight_g"] = torch.rand(shape[0], 1, 1, generator=rng) * 0.7 + 0.7
        sd[f"{name}.weight_v"] = torch.randn(shape, generator=rng)
        out_channels = shape[1] if name.startswith("ups.") else shape[0]
        sd[f"{name}.bias"] = torch.randn(out_channels, generator=rng) * 0.05

    channels = config["upsample_initial_channel"]
    conv("conv_pre", (channels, config["num_mels"], 7))
    n_kernels = len(config["resblock_kernel_sizes"])
    for i, (_, kernel) in enumerate(zip(config["upsample_rates"], config["upsample_kernel_sizes"])):
        c_in, c_out = channels // 2**i, channels // 2 ** (i + 1)
        conv(f"ups.{i}", (c_in, c_out, kernel))  # ConvTranspose1d weight: (in, out, kernel)
        for j, (k, dilations) in enumerate(zip(config["resblock_kernel_sizes"], config["resblock_dilation_sizes"])):
            for m in range(len(dilations)):
                if config["resblock"] == "1":
                    conv(f"resblocks.{i * n_kernels + j}.convs1.{m}", (c_out, c_out, k))
                    conv(f"resblocks.{i * n_kernels + j}.convs2.{m}", (c_out, c_out, k))
                else:
                    conv(f"resblocks.{i * n_kernels + j}.convs.{m}", (c_out, c_out, k))
    conv("conv_post", (1, channels // 2 ** len(config["upsample_rates"]), 7))
    return sd


def reference_hifigan(sd: dict[str, torch.Tensor], config: dict, mel: torch.Tensor) -> torch.Tensor:
    """HiFi-GAN's forward pass written out with F.conv1d / F.conv_transpose1d and weight norm by hand."""

    def weight(name: str) -> torch.Tensor:
        g, v = sd[f"{name}.weight_g"], sd[f"{name}.weight_v"]
        return g * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()

    def conv(x, name, dilation=1):
        k = sd[f"{name}.weight_v"].shape[-1]
        return F.conv1d(x, weight(name), sd[f"{name}.bias"], dilation=dilation, padding=(k * dilation - dilation) // 2)

    x = conv(mel, "conv_pre")
    n_kernels = len(config["resblock_kernel_sizes"])
    for i, (rate, kernel) in enumerate(zip(config["upsample_rates"], config["upsample_kernel_sizes"])):
        x = F.conv_transpose1d(F.leaky_relu(x, 0.1), weight(f"ups.{i}"), sd[f"ups.{i}.bias"], stride=rate,
                               padding=(kernel - rate) // 2)
        total = 0
        for j, dilations in enumerate(config["resblock_dilation_sizes"]):
            block, y = f"resblocks.{i * n_kernels + j}", x
            for m, d in enumerate(dilations):
                if config["resblock"] == "1":
                    t = conv(F.leaky_relu(y, 0.1), f"{block}.convs1.{m}", d)
                    y = y + conv(F.leaky_relu(t, 0.1), f"{block}.convs2.{m}")
                else:
                    y = y + conv(F.leaky_relu(y, 0.1), f"{block}.convs.{m}", d)
            total = total + y
        x = total / n_kernels
    return torch.tanh(conv(F.leaky_relu(x, 0.01), "conv_post"))[:, 0]


def jik876_config(generator: HiFiGANConfig, **mel_changes) -> dict:
    """A config.json as jik876/hifi-gan writes it (training keys included, which the importer ignores)."""
    config = {
        "resblock": generator.resblock, "num_gpus": 0, "batch_size": 16, "learning_rate": 0.0002,
        "adam_b1": 0.8, "adam_b2": 0.99, "lr_decay": 0.999, "seed": 1234,
        "upsample_rates": list(generator.upsample_rates),
        "upsample_kernel_sizes": list(generator.upsample_kernel_sizes),
        "upsample_initial_channel": generator.upsample_initial_channel,
        "resblock_kernel_sizes": list(generator.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in generator.resblock_dilation_sizes],
        "segment_size": 8192, "num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
        "sampling_rate": 22050, "fmin": 0, "fmax": 8000, "fmax_for_loss": None,
    }
    config.update(mel_changes)
    return config


@pytest.mark.parametrize("preset", [HIFIGAN_V1, HIFIGAN_V3], ids=["v1", "v3"])
def test_imported_jik876_checkpoint_matches_a_hand_written_reference(tmp_path, preset):
    config = jik876_config(preset)
    state_dict = jik876_state_dict(config)
    torch.save({"generator": state_dict}, tmp_path / "g_02500000")
    (tmp_path / "config.json").write_text(json.dumps(config))

    from voiceconv.cli import main

    code = main(["import-vocoder", "hifigan", str(tmp_path / "g_02500000"), "--config",
                 str(tmp_path / "config.json"), "--out", str(tmp_path / "imported")])
    assert code == 0
    vocoder = Vocoder.from_pretrained(tmp_path / "imported", device="cpu")
    assert vocoder.config.generator == "hifigan" and vocoder.is_neural
    mel = torch.randn(1, 80, 6) * 2
    with torch.no_grad():
        expected = reference_hifigan(state_dict, config, mel)
    output = vocoder.decode(mel)
    assert output.shape == expected.shape == (1, 6 * HOP)
    assert expected.std() > 0.05 and expected.abs().max() < 0.999  # a real signal, neither silent nor saturated
    assert torch.allclose(output, expected, atol=1e-4)


def test_import_refuses_a_different_mel_and_wrong_shapes(tmp_path):
    config = jik876_config(HIFIGAN_V1)
    torch.save({"generator": jik876_state_dict(config)}, tmp_path / "g")
    (tmp_path / "other_mel.json").write_text(json.dumps(jik876_config(HIFIGAN_V1, sampling_rate=24000, fmax=12000)))
    with pytest.raises(MelMismatchError, match="sample_rate"):
        import_jik876(tmp_path / "g", tmp_path / "other_mel.json", tmp_path / "out")
    (tmp_path / "v3.json").write_text(json.dumps(jik876_config(HIFIGAN_V3)))
    with pytest.raises(CheckpointError, match="do not fit"):
        import_jik876(tmp_path / "g", tmp_path / "v3.json", tmp_path / "out")
    (tmp_path / "not_torch").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only"):
        import_jik876(tmp_path / "not_torch", tmp_path / "v3.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shipped_configs_describe_the_published_variants():
    from pathlib import Path

    import voiceconv
    from voiceconv.training.vocoder_trainer import load_experiment

    params = {}
    for name in ("istft", "hifigan_v1", "hifigan_v2", "hifigan_v3", "debug"):
        experiment = load_experiment(Path(voiceconv.__file__).parent / "conf" / f"vocoder_{name}.yaml")
        params[name] = Vocoder(experiment.model).n_parameters()
    # Published sizes: V1 13.92 M, V2 0.93 M, V3 1.46 M parameters.
    assert params["hifigan_v1"] == pytest.approx(13.92e6, rel=0.01)
    assert params["hifigan_v2"] == pytest.approx(0.93e6, rel=0.01)
    assert params["hifigan_v3"] == pytest.approx(1.46e6, rel=0.01)
    assert params["debug"] < 100_000 < params["istft"]
