"""Tests of the AdaIN-VC model family (voiceconv.models) and of training augmentation (voiceconv.training.augment)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml

import voiceconv
from voiceconv.config import apply_overrides, deep_merge, from_dict, load_yaml
from voiceconv.errors import ConfigError, VoiceconvError
from voiceconv.features import MelConfig, MelMismatchError
from voiceconv.models import VCConfig, VCModel
from voiceconv.models.layers import gradient_reversal, instance_norm, masked_mean
from voiceconv.models.quantizer import QuantizerConfig, VectorQuantizer
from voiceconv.models.speaker_classifier import SpeakerClassifierConfig
from voiceconv.training.augment import AugmentConfig, apply_gain, augment_batch, n_virtual_speakers, warp_mel

CONF = Path(voiceconv.__file__).parent / "conf"
VARIANTS = ["adain_vc", "adain_vc_vq", "adain_vc_adv", "adain_vc_vq_adv"]
N_MELS = 80
log = logging.getLogger(__name__)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def debug_dims() -> dict:
    """The ``model:`` section of debug.yaml alone (without its base), to lay over any variant."""
    data = yaml.safe_load((CONF / "debug.yaml").read_text())
    return data["model"]


def variant_config(name: str) -> tuple[VCConfig, dict]:
    data = load_yaml(CONF / f"{name}.yaml")
    model = deep_merge(data["model"], debug_dims())
    # The VQ and adversary sizes are not in debug.yaml (it must not switch them on); shrink them here.
    overrides = []
    if model.get("quantizer") is not None:
        overrides += ["quantizer.codebook_size=16", "quantizer.code_dim=4"]
    if model.get("speaker_classifier") is not None:
        overrides += ["speaker_classifier.channels=8", "speaker_classifier.pretrain_steps=10",
                      "speaker_classifier.ramp_steps=10"]
    return from_dict(VCConfig, apply_overrides(model, overrides)), data["train"]


def tiny_model(name: str = "adain_vc", n_speakers: int = 3) -> VCModel:
    config, _ = variant_config(name)
    return VCModel(config, n_speakers=n_speakers if config.speaker_classifier else 0)


def random_mel(batch: int, frames: int) -> torch.Tensor:
    return torch.randn(batch, N_MELS, frames) - 5.0  # roughly the level of natural-log speech mels


# ---------------------------------------------------------------------------------------------------
# shapes and inference API


@pytest.mark.parametrize("frames", [1, 5, 9, 37, 64])
def test_shapes_for_any_length(frames):
    model = tiny_model("adain_vc_vq").eval()
    mel = random_mel(2, frames)
    out = model(mel)
    assert out["mel_hat"].shape == (2, N_MELS, frames)
    content = model.encode_content(mel)
    assert content.shape == (2, model.content_dim, math.ceil(frames / 8))
    speaker = model.embed(mel)
    assert speaker.shape == (2, model.speaker_dim)
    assert model.decode(content, speaker, frames).shape == (2, N_MELS, frames)
    assert model.convert(mel, speaker[0]).shape == (2, N_MELS, frames)
    # Asking for more frames than the code covers pads instead of failing.
    assert model.decode(content, speaker, 8 * content.shape[-1] + 3).shape[-1] == 8 * content.shape[-1] + 3


def test_default_config_size():
    model = VCModel()
    n = model.n_parameters()
    log.info("default AdaIN-VC parameters: %d", n)
    # Official AdaIN-VC with 80 mels: ~1.5 M content encoder, ~1.7 M speaker encoder, ~1.65 M decoder.
    assert 4_500_000 < n < 5_500_000
    assert model.n_parameters(trainable_only=True) == n


def test_embedding_any_length_and_mask():
    model = tiny_model().eval()
    for frames in (1, 2, 3, 17, 200):
        assert torch.isfinite(model.embed(random_mel(1, frames))).all()
    mel = random_mel(2, 40)
    mask = torch.ones(2, 40)
    mask[1, 25:] = 0
    masked = model.embed(mel, mask)
    assert torch.allclose(masked[0], model.embed(mel[:1])[0], atol=1e-6)  # all-real row: mask is a no-op
    assert not torch.allclose(masked[1], model.embed(mel[1:])[0], atol=1e-4)  # padding left out of the pool


def test_multiple_references_are_averaged():
    model = tiny_model().eval()
    a, b = random_mel(1, 30)[0], random_mel(1, 51)[0]
    expected = (model.embed(a[None])[0] + model.embed(b[None])[0]) / 2
    assert torch.allclose(model.embed_references([a, b]), expected, atol=1e-6)
    with pytest.raises(VoiceconvError):
        model.embed_references([])


def test_wrong_input_shapes_raise_with_a_fix():
    model = tiny_model().eval()
    with pytest.raises(VoiceconvError, match="MelSpectrogram"):
        model.embed(torch.randn(1, 64, 20))
    with pytest.raises(VoiceconvError, match="speaker"):
        model.convert(random_mel(1, 16), torch.randn(3))
    with pytest.raises(VoiceconvError, match="speaker id"):
        adv = tiny_model("adain_vc_adv", n_speakers=3)
        adv(random_mel(2, 16), speaker_ids=torch.tensor([0, 5]))


def test_normalization_buffers_round_trip_raw_mels():
    model = tiny_model().eval()
    mean, std = torch.linspace(-8, -2, N_MELS), torch.linspace(0.5, 2.0, N_MELS)
    model.set_normalization(mean, std)
    mel = random_mel(1, 12)
    assert torch.allclose(model.denormalize(model.normalize(mel)), mel, atol=1e-5)
    assert "mel_mean" in model.state_dict() and "mel_std" in model.state_dict()
    with pytest.raises(VoiceconvError):
        model.set_normalization(mean[:10], std[:10])
    with pytest.raises(VoiceconvError):
        model.set_normalization(mean, torch.zeros(N_MELS))


def test_masked_layers_match_unpadded():
    x = torch.randn(1, 4, 10)
    padded = torch.cat([x, 100 * torch.randn(1, 4, 6)], dim=-1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], dim=-1)
    assert torch.allclose(instance_norm(padded, mask)[..., :10], instance_norm(x), atol=1e-5)
    assert torch.allclose(masked_mean(padded, mask), x.mean(-1), atol=1e-6)
    assert torch.equal(instance_norm(torch.ones(1, 2, 1)), torch.zeros(1, 2, 1))  # one frame is allowed


def test_masked_reconstruction_loss_ignores_padding():
    model = tiny_model().eval()
    mel = random_mel(2, 32)
    mask = torch.ones(2, 32)
    mask[:, 20:] = 0
    out = model(mel, mask=mask)
    error = (model.normalize(out["mel_hat"]) - model.normalize(mel)).abs()[..., :20]
    assert torch.allclose(out["loss/rec"], error.mean(), atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# config errors


def test_config_errors():
    with pytest.raises(ConfigError, match="decoder.chanels"):
        from_dict(VCConfig, {"decoder": {"chanels": 3}})
    with pytest.raises(ConfigError, match="subsample"):
        VCModel(from_dict(VCConfig, {"decoder": {"upsample": [2, 2]}}))
    with pytest.raises(ConfigError, match="variational"):
        VCModel(VCConfig(quantizer=QuantizerConfig()))
    with pytest.raises(ConfigError, match="n_speakers"):
        VCModel(VCConfig(speaker_classifier=SpeakerClassifierConfig()), n_speakers=0)


# ---------------------------------------------------------------------------------------------------
# vector quantiser


def test_vq_straight_through_gradient():
    vq = VectorQuantizer(4, QuantizerConfig(codebook_size=8, code_dim=4)).train()
    vq(torch.randn(2, 4, 6))  # initialise the codebook from data
    vq.eval()  # so the EMA does not move the codes after they were looked up
    x = torch.randn(2, 4, 6, requires_grad=True)
    quantized, commit, _ = vq(x)
    # Forward: every frame is a codebook row.
    rows = quantized.detach().transpose(1, 2).reshape(-1, 4)
    assert all(any(torch.allclose(r, c) for c in vq.codebook) for r in rows)
    weights = torch.randn_like(quantized)
    (quantized * weights).sum().backward()
    assert torch.allclose(x.grad, weights)  # backward: identity through the quantiser
    assert commit.requires_grad and float(commit.detach()) >= 0


def test_vq_ema_moves_codes_only_in_training():
    config = QuantizerConfig(codebook_size=2, code_dim=2, decay=0.9, epsilon=0.0, dead_code_steps=1000)
    vq = VectorQuantizer(2, config)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq.ema_sum.copy_(vq.codebook)
    vq.ema_count.fill_(1.0)
    vq.initialized.fill_(1)
    data = torch.tensor([[1.0, 1.0], [1.0, 1.0], [9.0, 9.0]]).t().unsqueeze(0)  # (1, 2, 3): frames near each code

    vq.eval()
    vq(data)
    assert torch.equal(vq.codebook, torch.tensor([[0.0, 0.0], [10.0, 10.0]]))

    vq.train()
    vq(data)
    # count_0 = 0.9 * 1 + 0.1 * 2 = 1.1; sum_0 = 0.9 * 0 + 0.1 * (2, 2) -> code 0 = (0.2, 0.2) / 1.1
    assert torch.allclose(vq.ema_count, torch.tensor([1.1, 1.0]))
    assert torch.allclose(vq.codebook[0], torch.full((2,), 0.2 / 1.1), atol=1e-6)
    assert torch.allclose(vq.codebook[1], torch.full((2,), 9.9), atol=1e-6)  # 0.9 * 10 + 0.1 * 9


def test_vq_first_batch_initializes_codebook_from_data():
    vq = VectorQuantizer(3, QuantizerConfig(codebook_size=4, code_dim=3)).train()
    data = torch.randn(2, 3, 50) + 20.0  # far from the N(0, 1) random start
    _, _, metrics = vq(data)
    assert int(vq.initialized) == 1
    assert (vq.codebook.mean(dim=1) > 15).all()
    assert float(metrics["metric/vq_live_codes"]) >= 2
    assert 1.0 <= float(metrics["metric/vq_perplexity"]) <= 4.0


def test_vq_dead_codes_are_reinitialized_from_encoder_outputs():
    config = QuantizerConfig(codebook_size=3, code_dim=2, dead_code_steps=2)
    vq = VectorQuantizer(2, config).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1000.0, 1000.0]]))
    vq.ema_sum.copy_(vq.codebook)
    vq.initialized.fill_(1)
    data = torch.rand(1, 2, 40)  # every frame is nearer code 0 or 1 than code 2
    _, _, first = vq(data)
    assert float(first["metric/vq_reinit_codes"]) == 0
    assert vq.codebook[2, 0] > 100
    _, _, second = vq(data)
    assert float(second["metric/vq_reinit_codes"]) >= 1
    # Code 2 now sits on one of the encoder outputs.
    frames = data[0].t()
    assert torch.isclose(frames, vq.codebook[2]).all(dim=1).any()
    assert int(vq.unused_steps[2]) == 0


# ---------------------------------------------------------------------------------------------------
# adversarial speaker classifier


def test_gradient_reversal_flips_and_scales():
    x = torch.randn(5, requires_grad=True)
    gradient_reversal(x, 0.5).sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), -0.5))


def test_reversal_schedule():
    config = SpeakerClassifierConfig(pretrain_steps=100, ramp_steps=50, max_coefficient=1.0)
    assert [config.coefficient(s) for s in (0, 99, 100, 125, 150, 10_000)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def test_adversarial_loss_pushes_encoder_the_other_way():
    model = tiny_model("adain_vc_adv", n_speakers=3)
    classifier = model.speaker_classifier
    content = torch.randn(2, model.content_dim, 4, requires_grad=True)
    ids = torch.tensor([0, 2])
    late = classifier.config.pretrain_steps + classifier.config.ramp_steps
    loss, metrics = classifier.adversarial_loss(content, ids, step=late)
    reversed_grad, = torch.autograd.grad(loss, content)
    plain = torch.nn.functional.cross_entropy(classifier(content), ids)
    plain_grad, = torch.autograd.grad(plain, content)
    assert torch.allclose(reversed_grad, -plain_grad, atol=1e-6)
    assert 0.0 <= float(metrics["metric/adv_accuracy"]) <= 1.0
    loss, _ = classifier.adversarial_loss(content, ids, step=0)  # pre-training: encoder untouched
    assert torch.count_nonzero(torch.autograd.grad(loss, content)[0]) == 0


# ---------------------------------------------------------------------------------------------------
# training step over the four variants


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_training_step_moves_every_parameter(variant):
    config, train = variant_config(variant)
    n_speakers = 3
    model = VCModel(config, n_speakers=n_speakers if config.speaker_classifier else 0).train()
    model.set_normalization(torch.full((N_MELS,), -5.0), torch.full((N_MELS,), 1.5))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mel = random_mel(4, 27)  # not a multiple of 8
    mask = torch.ones(4, 27)
    mask[3, 20:] = 0
    ids = torch.tensor([0, 1, 2, 1])
    # Past the classifier's pre-training, so the reversed gradient reaches the encoder too.
    step = config.speaker_classifier.pretrain_steps + 1 if config.speaker_classifier else 0
    out = model(mel, speaker_ids=ids, mask=mask, step=step)

    losses = {k: v for k, v in out.items() if k.startswith("loss/")}
    assert set(losses) >= {"loss/rec", "loss/kl"}
    assert ("loss/vq_commit" in losses) == (config.quantizer is not None)
    assert ("loss/adv" in losses) == (config.speaker_classifier is not None)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert all(torch.isfinite(torch.as_tensor(v)).all() for k, v in out.items() if k.startswith("metric/"))
    total = sum(train["lambdas"][k] * v for k, v in losses.items())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()

    unchanged = [name for name, p in model.named_parameters() if torch.equal(before[name], p.detach())]
    assert not unchanged, f"parameters that did not move: {unchanged}"
    assert out["mel_hat"].shape == mel.shape


# ---------------------------------------------------------------------------------------------------
# checkpoints


def test_save_load_round_trip(tmp_path):
    model = tiny_model("adain_vc_vq_adv", n_speakers=4).train()
    model.set_normalization(torch.linspace(-7, -3, N_MELS), torch.linspace(1.0, 2.0, N_MELS))
    model(random_mel(2, 32), speaker_ids=torch.tensor([0, 3]))  # initialises and moves the EMA codebook
    model.eval()
    model.save_pretrained(tmp_path / "vc")
    meta = json.loads((tmp_path / "vc" / "config.json").read_text())
    assert meta["kind"] == "vc_model" and meta["n_speakers"] == 4

    loaded = VCModel.from_pretrained(tmp_path / "vc", device="cpu")
    assert not loaded.training and loaded.n_speakers == 4
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
    mel = random_mel(2, 45)
    with torch.no_grad():
        speaker = model.embed(mel[1:])
        assert torch.equal(model.convert(mel, speaker), loaded.convert(mel, speaker))
        assert torch.equal(model.embed(mel), loaded.embed(mel))
        assert torch.equal(model(mel)["mel_hat"], loaded(mel)["mel_hat"])


def test_checkpoint_refuses_unknown_keys_and_mel_mismatch(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "vc")
    with pytest.raises(MelMismatchError, match="hop_length"):
        VCModel.from_pretrained(tmp_path / "vc", device="cpu", mel_config=MelConfig(hop_length=128))
    VCModel.from_pretrained(tmp_path / "vc", device="cpu", mel_config=MelConfig())  # same mel: fine

    config_path = tmp_path / "vc" / "config.json"
    meta = json.loads(config_path.read_text())
    meta["config"]["decoder"]["chanels"] = 64
    config_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="decoder.chanels"):
        VCModel.from_pretrained(tmp_path / "vc", device="cpu")


# ---------------------------------------------------------------------------------------------------
# augmentation


def test_gain_acts_in_the_linear_domain_and_keeps_the_floor():
    floor = math.log(1e-5)
    mel = torch.tensor([[[floor, -3.0, -0.5]]]).transpose(1, 2)  # (1, 3, 1): silence, speech, loud
    louder = apply_gain(mel, torch.tensor([20.0]), 1e-5)  # x10 amplitude
    assert torch.allclose(louder[0, :, 0], torch.tensor([floor, -3.0 + math.log(10), -0.5 + math.log(10)]))
    quieter = apply_gain(torch.tensor([[[-11.0]]]), torch.tensor([-20.0]), 1e-5)
    assert torch.allclose(quieter, torch.tensor([[[floor]]]))  # clamped again at the floor


def test_vtlp_warp():
    mel = torch.zeros(1, N_MELS, 1)
    mel[0, 20, 0] = 1.0  # a formant peak at bin 20
    assert torch.allclose(warp_mel(mel, torch.tensor([1.0])), mel)
    up = warp_mel(mel, torch.tensor([1.1]))
    down = warp_mel(mel, torch.tensor([0.9]))
    assert up[0, :, 0].argmax() == 22  # alpha > 1 stretches the spectrum upward: bin 22 reads bin 20
    assert down[0, :, 0].argmax() == 18
    ramp = torch.arange(N_MELS, dtype=torch.float32).view(1, N_MELS, 1)
    for alpha in (0.85, 1.15):
        warped = warp_mel(ramp, torch.tensor([alpha]))[0, :, 0]
        assert warped[0] == 0 and torch.isclose(warped[-1], torch.tensor(N_MELS - 1.0))  # ends stay put
        assert (warped[1:] >= warped[:-1]).all()  # monotone: no folding


def test_augment_batch_virtual_speakers_and_determinism():
    config = AugmentConfig(vtlp_probability=1.0, vtlp_alpha=(0.9, 1.1), n_warp_buckets=4, gain_probability=1.0)
    batch = {"mel": random_mel(64, 10), "speaker": torch.arange(64) % 3, "mask": torch.ones(64, 10)}
    first = augment_batch(batch, config, torch.Generator().manual_seed(1))
    second = augment_batch(batch, config, torch.Generator().manual_seed(1))
    assert torch.equal(first["mel"], second["mel"]) and torch.equal(first["speaker"], second["speaker"])
    assert not torch.equal(first["mel"], batch["mel"])
    assert first["mask"] is batch["mask"]
    assert torch.equal(first["speaker"] // 4, batch["speaker"])  # the real speaker is recoverable
    assert first["speaker"].max() < n_virtual_speakers(3, config) == 12
    assert len(set((first["speaker"] % 4).tolist())) > 1  # several warp buckets drawn

    plain = AugmentConfig(gain_probability=0.0)  # VTLP off by default: ids and mels untouched
    same = augment_batch(batch, plain, torch.Generator().manual_seed(1))
    assert torch.equal(same["mel"], batch["mel"]) and torch.equal(same["speaker"], batch["speaker"])
    assert n_virtual_speakers(3, plain) == 3
    with pytest.raises(ConfigError):
        AugmentConfig(vtlp_alpha=(1.1, 1.2))


def test_bf16_autocast_forward_backward():
    """The trainer runs under bf16 autocast on GPUs; the CPU autocast exercises the same dtype paths."""
    model = tiny_model("adain_vc_vq_adv", n_speakers=3).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(random_mel(2, 30), speaker_ids=torch.tensor([0, 2]), mask=torch.ones(2, 30), step=100)
    total = sum(v.float() for k, v in out.items() if k.startswith("loss/"))
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.quantizer.codebook.dtype == torch.float32  # EMA statistics stay in full precision
