"""The phone recogniser (voiceconv/models/phone_recognizer.py) and the VC term it drives (train.phonetic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train import (
    DENOISE,
    _one_thread,  # noqa: F401 -- the same autouse one-thread fixture
    experiment,
    make_corpus,
)

from voiceconv.errors import ConfigError, VoiceconvError
from voiceconv.evaluation.metrics import edit_distance
from voiceconv.features import MelConfig
from voiceconv.models.phone_recognizer import PhoneRecognizer, PhoneRecognizerConfig
from voiceconv.models.vc_model import VCModel
from voiceconv.training import vc_trainer
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import Distributed
from voiceconv.training.loop import NanGuard
from voiceconv.training.phonetic import RecognizerTrainConfig, phonetic_loss, train_recognizer, transcribe
from voiceconv.training.vc_trainer import State, train_step

PHONES = ("a", "i", "u", "s")
MIN_LOG = float(np.log(1e-5))


def toy_utterance(rng: np.random.Generator, phones: list[int], voice_shift: int) -> np.ndarray:
    """A log-mel ``(80, T)`` where phone k is a bright band at bins ``12 + 14 k`` (moved by ``voice_shift``
    bins, a crude other voice) held for 6-10 frames, with short silences between phones."""
    frames = []
    for phone in phones:
        length = int(rng.integers(6, 11))
        mel = np.full((80, length), -7.0, np.float32)
        centre = 12 + 14 * phone + voice_shift
        mel[centre - 3 : centre + 4] = -1.0
        frames += [np.full((80, int(rng.integers(1, 4))), -7.0, np.float32), mel]
    frames.append(np.full((80, 2), -7.0, np.float32))
    mel = np.concatenate(frames, axis=1)
    return mel + 0.3 * rng.standard_normal(mel.shape).astype(np.float32)


def toy_examples(n: int, seed: int) -> list[tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        phones = [int(p) for p in rng.integers(len(PHONES), size=int(rng.integers(3, 7)))]
        examples.append((toy_utterance(rng, phones, int(rng.integers(-2, 3))), phones))
    return examples


@pytest.fixture(scope="module")
def trained_recognizer(tmp_path_factory):
    torch.manual_seed(0)
    recognizer = PhoneRecognizer(PhoneRecognizerConfig(phones=PHONES, channels=64))
    initial = {k: v.clone() for k, v in recognizer.state_dict().items()}
    config = RecognizerTrainConfig(steps=150, batch_size=8, lr=3e-3, log_every=25)
    recognizer, scores = train_recognizer(toy_examples(64, 0), config, recognizer, MIN_LOG, device="cpu")
    out = tmp_path_factory.mktemp("recogniser") / "phones"
    recognizer.save_pretrained(out)
    return out, scores, initial


def test_recogniser_training_learns_unseen_utterances_and_moves_every_parameter(trained_recognizer):
    out, scores, initial = trained_recognizer
    assert scores["loss_last"] < 0.3 * scores["loss_first"], scores
    recognizer = PhoneRecognizer.from_pretrained(out, device="cpu")
    held_out = toy_examples(20, seed=1)
    errors = sum(edit_distance([PHONES[p] for p in phones], transcribe(recognizer, mel)) for mel, phones in held_out)
    assert errors / sum(len(phones) for _, phones in held_out) < 0.2
    for name, value in recognizer.state_dict().items():
        if "num_batches" not in name:
            assert not torch.equal(value, initial[name]), name


def test_a_saved_recogniser_loads_frozen_with_its_inventory_and_ignores_padding(tmp_path):
    torch.manual_seed(0)
    recognizer = PhoneRecognizer(PhoneRecognizerConfig(phones=PHONES, channels=32)).eval()
    recognizer.save_pretrained(tmp_path / "phones")
    loaded = PhoneRecognizer.from_pretrained(tmp_path / "phones", device="cpu")
    assert loaded.config.phones == PHONES and loaded.config.n_classes == 5
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    mel = torch.randn(2, 80, 50) - 5.0
    mask = torch.ones(2, 50)
    mask[1, 30:] = 0.0
    expected = recognizer.log_probs(mel, mask)
    assert expected.shape == (2, 50, 5)
    assert torch.allclose(loaded.log_probs(mel, mask), expected, atol=1e-5)
    assert torch.allclose(expected.exp().sum(dim=-1), torch.ones(2, 50), atol=1e-4)
    # Padded frames are read as silence at the utterance's mean: what they held does not matter.
    changed = mel.clone()
    changed[1, :, 30:] += 4.0
    assert torch.allclose(loaded.log_probs(changed, mask)[1], expected[1], atol=1e-5)
    with pytest.raises(VoiceconvError, match="mel must be"):
        loaded.log_probs(torch.zeros(1, 40, 10))
    with pytest.raises(VoiceconvError, match="phones"):
        PhoneRecognizerConfig(phones=())
    with pytest.raises(VoiceconvError, match="phones"):
        PhoneRecognizerConfig(phones=("a", "a"))


def test_training_refuses_examples_it_cannot_use():
    recognizer = PhoneRecognizer(PhoneRecognizerConfig(phones=PHONES, channels=16))
    mel = np.zeros((80, 20), np.float32)
    with pytest.raises(ConfigError, match="phone indices"):
        train_recognizer([(mel, [0, 7])], RecognizerTrainConfig(steps=1), recognizer, MIN_LOG, device="cpu")
    with pytest.raises(ConfigError, match="no training example"):
        train_recognizer([(mel, [])], RecognizerTrainConfig(steps=1), recognizer, MIN_LOG, device="cpu")


def test_the_phonetic_term_is_zero_for_the_source_itself_and_pulls_only_the_conversion(trained_recognizer):
    out, _, _ = trained_recognizer
    recognizer = PhoneRecognizer.from_pretrained(out, device="cpu")
    rng = np.random.default_rng(5)
    first = toy_utterance(rng, [0, 1, 2, 3], 0)
    other = toy_utterance(rng, [3, 2, 1, 0], 0)
    frames = min(first.shape[1], other.shape[1])
    source = torch.from_numpy(first[:, :frames]).unsqueeze(0)
    # The same phones in another voice read (nearly) alike; other phones do not.
    same_words = torch.from_numpy(np.roll(first[:, :frames], 2, axis=0)).unsqueeze(0)
    other_words = torch.from_numpy(other[:, :frames]).unsqueeze(0).requires_grad_(True)
    assert float(phonetic_loss(recognizer, source, source)) < 1e-5
    assert float(phonetic_loss(recognizer, same_words, source)) < 0.3 * float(
        phonetic_loss(recognizer, other_words.detach(), source))
    source.requires_grad_(True)
    loss = phonetic_loss(recognizer, other_words, source)
    loss.backward()
    assert other_words.grad is not None and float(other_words.grad.abs().sum()) > 0
    assert source.grad is None  # the source's reading is a fixed goal
    # Frames outside the mask do not count: a conversion that differs only there scores zero.
    mask = torch.ones(1, frames)
    mask[0, frames // 2:] = 0.0
    half = source.detach().clone()
    half[:, :, frames // 2:] = other_words.detach()[:, :, frames // 2:]
    assert float(phonetic_loss(recognizer, half, source.detach())) > 0.05
    assert float(phonetic_loss(recognizer, half, source.detach(), mask)) < 1e-5


def test_vc_step_reads_the_raw_conversion_against_its_own_source(trained_recognizer, tmp_path, monkeypatch):
    corpus = make_corpus(tmp_path / "corpus")
    out, _, _ = trained_recognizer
    config = experiment(*DENOISE, f"train.phonetic.path={out}", "train.lambdas.loss/phonetic=1.0")
    model = VCModel(config.model)
    model.set_normalization(torch.linspace(-9.0, -3.0, 80), torch.linspace(1.5, 3.0, 80))
    state = State(model, torch.optim.Adam(model.parameters(), lr=1e-3), config.train, Distributed(), NanGuard(5))
    state.recognizer = PhoneRecognizer.from_pretrained(out, device="cpu")
    before = {k: v.clone() for k, v in state.recognizer.state_dict().items()}
    batch = SegmentBatcher(PreparedCorpus(corpus), 160, 8, seed=0, with_reference=True).batch(0)
    calls = []
    original_loss, original_forward = vc_trainer.phonetic_loss, VCModel.forward

    def spy_forward(self, *args, **kwargs):
        result = original_forward(self, *args, **kwargs)
        calls.append({"partner": kwargs["cycle_partner"].clone(), "normalised": result["cycle_converted"].detach()})
        return result

    def spy_loss(recognizer, converted, source, mask):
        calls[-1].update(converted=converted.detach(), source=source, mask=mask)
        return original_loss(recognizer, converted, source, mask)

    monkeypatch.setattr(VCModel, "forward", spy_forward)
    monkeypatch.setattr(vc_trainer, "phonetic_loss", spy_loss)
    values = train_step(state, batch)
    (call,) = calls
    n = call["partner"].numel()
    assert torch.allclose(call["converted"], call["normalised"] * model.mel_std[:, None] + model.mel_mean[:, None],
                          atol=1e-2)
    assert torch.equal(call["source"], batch["mel"][:n]) and torch.equal(call["mask"], batch["mask"][:n])
    recomputed = float(original_loss(state.recognizer, call["converted"], call["source"], call["mask"]))
    assert recomputed > 0.0 and abs(values["loss/phonetic"] - recomputed) < 0.02
    for name, value in state.recognizer.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(ConfigError, match="train.cycle"):
        experiment(f"train.phonetic.path={out}")


def test_the_phonetic_term_reaches_all_three_modules_and_never_the_recogniser(trained_recognizer, tmp_path):
    """Gradients at weight 0 and 1 from the same weights (no clipping, which would rescale every gradient)."""
    corpus = make_corpus(tmp_path / "corpus")
    out, _, _ = trained_recognizer
    batch = SegmentBatcher(PreparedCorpus(corpus), 32, 8, seed=0, with_reference=True).batch(0)
    grads = {}
    for weight in (0.0, 1.0):
        config = experiment(*DENOISE, f"train.phonetic.path={out}", f"train.lambdas.loss/phonetic={weight}",
                            "train.grad_clip=0")
        torch.manual_seed(0)
        model = VCModel(config.model)
        state = State(model, torch.optim.SGD(model.parameters(), lr=0.0), config.train, Distributed(), NanGuard(5))
        state.recognizer = PhoneRecognizer.from_pretrained(out, device="cpu")
        train_step(state, batch)
        grads[weight] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        assert all(p.grad is None for p in state.recognizer.parameters())
    for module in ("content_encoder.", "speaker_encoder.", "decoder."):
        names = [n for n in grads[0.0] if n.startswith(module)]
        assert names, module
        assert any(not torch.allclose(grads[0.0][n], grads[1.0][n]) for n in names), module


def test_the_phonetic_term_refuses_a_critic_that_detaches_the_content(trained_recognizer):
    out, _, _ = trained_recognizer
    with pytest.raises(ConfigError, match="content_gradient"):
        experiment(*DENOISE, f"train.phonetic.path={out}", f"train.speaker_critic.path={out}",
                   "train.speaker_critic.content_gradient=false")


def test_an_all_padding_row_adds_nothing(trained_recognizer):
    out, _, _ = trained_recognizer
    recognizer = PhoneRecognizer.from_pretrained(out, device="cpu")
    source = torch.from_numpy(toy_utterance(np.random.default_rng(2), [0, 1, 2], 0)).unsqueeze(0)
    converted = torch.roll(source, 3, dims=1)
    mask = torch.ones(1, source.shape[-1])
    alone = phonetic_loss(recognizer, converted, source, mask)
    padded = phonetic_loss(recognizer, torch.cat([converted, converted + 2.0]), torch.cat([source, source]),
                           torch.cat([mask, torch.zeros_like(mask)]))
    assert torch.isfinite(padded) and abs(float(padded) - float(alone)) < 1e-5


def test_config_needs_a_path():
    with pytest.raises(ConfigError, match="train.phonetic.path"):
        experiment(*DENOISE, "train.phonetic.path=")
    assert MelConfig()  # the default front end builds a recogniser config
    assert PhoneRecognizerConfig(phones=PHONES).mel == MelConfig()
