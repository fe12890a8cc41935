"""Train a phone recogniser, and the VC term that asks a conversion to keep its source's phones
(``train.phonetic``).

The term reuses the cycle's conversions (:mod:`voiceconv.training.cycle`): utterance ``i`` rendered in the
voice of batch utterance ``partner[i]`` keeps the timing of ``i``, so the frozen recogniser
(:mod:`voiceconv.models.phone_recognizer`) can read both frame by frame. ``loss/phonetic`` is the KL
divergence of the conversion's phone posteriors from the source's, averaged over real frames::

    loss/phonetic = mean_t sum_k p_source(k | t) * (log p_source(k | t) - log p_converted(k | t))

weighted by ``lambdas["loss/phonetic"]``. The source's posteriors are the fixed target (read off the
clean source segment, not the warped or corrupted copy the content encoder sees); the gradient reaches
the decoder, the speaker encoder and the content encoder through the conversion, never the recogniser.
Unlike the content code read back off the conversion (``cycle.code_consistency``), the recogniser was
trained to ignore who speaks, so the term asks for the words without asking for the source's voice.

:func:`train_recognizer` trains the recogniser with CTC on whole utterances given as ``(mel, phones)``
examples (the recipe phonemises the transcripts and may add renderings of them in other voices), with
vocal-tract-length warps and SpecAugment-style masks so that it hears phones rather than one voice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from voiceconv.errors import ConfigError
from voiceconv.models.layers import masked_mean
from voiceconv.models.phone_recognizer import PhoneRecognizer, PhoneRecognizerConfig
from voiceconv.models.vc_model import default_device
from voiceconv.training.augment import warp_mel
from voiceconv.training.distributed import seed_everything
from voiceconv.training.loop import cosine_decay

logger = logging.getLogger(__name__)


@dataclass
class PhoneticTermConfig:
    path: str = ""  # a trained recogniser's directory (recipes/mini/local/train_phone_recognizer.py)

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("train.phonetic.path: give the directory of a trained phone recogniser")


def phonetic_loss(recognizer: PhoneRecognizer, converted: torch.Tensor, source: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL of the recogniser's posteriors on ``converted (n, n_mels, T)`` from those on ``source`` (the same
    shape; raw log-mels, ``mask (n, T)`` of real frames), averaged over real frames. No gradient reaches
    the source side. In float32, outside any autocast."""
    with torch.autocast(converted.device.type, enabled=False):
        with torch.no_grad():
            target = recognizer.log_probs(source.float(), mask)  # (n, T, K)
        produced = recognizer.log_probs(converted.float(), mask)  # (n, T, K)
        per_frame = (target.exp() * (target - produced)).sum(dim=-1)  # (n, T)
        if mask is None:
            return per_frame.mean()
        return (per_frame * mask).sum() / mask.sum().clamp_min(1.0)


@dataclass
class RecognizerTrainConfig:
    steps: int = 2500
    batch_size: int = 16  # whole utterances
    max_frames: int = 600  # longer utterances are left out (CTC needs them whole)
    lr: float = 2e-3
    final_lr_ratio: float = 0.05
    warp: float = 0.15  # vocal-tract-length warp factor drawn from [1 - warp, 1 + warp] per utterance
    freq_masks: int = 2  # SpecAugment: masked mel bands (up to freq_mask_width bins each)
    freq_mask_width: int = 8
    time_masks: int = 2  # masked stretches of up to time_mask_width frames each
    time_mask_width: int = 15
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.warp < 1.0:
            raise ConfigError(f"recogniser training: warp must lie in [0, 1), got {self.warp}")
        if min(self.freq_masks, self.freq_mask_width, self.time_masks, self.time_mask_width) < 0:
            raise ConfigError("recogniser training: mask counts and widths must be >= 0")


def _collate(examples: Sequence[tuple[np.ndarray, list[int]]], min_log: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mel (B, n_mels, T_max)`` padded with ``min_log``, ``mask (B, T_max)``, concatenated targets and
    their lengths, from ``(mel (n_mels, T), phone indices)`` examples."""
    n_mels = examples[0][0].shape[0]
    longest = max(mel.shape[1] for mel, _ in examples)
    mels = np.full((len(examples), n_mels, longest), min_log, np.float32)
    mask = np.zeros((len(examples), longest), np.float32)
    for b, (mel, _) in enumerate(examples):
        mels[b, :, : mel.shape[1]] = mel
        mask[b, : mel.shape[1]] = 1.0
    targets = torch.tensor([p for _, phones in examples for p in phones], dtype=torch.long)
    target_lengths = torch.tensor([len(phones) for _, phones in examples], dtype=torch.long)
    return torch.from_numpy(mels), torch.from_numpy(mask), targets, target_lengths


def _spec_augment(mel: torch.Tensor, mask: torch.Tensor, config: RecognizerTrainConfig,
                  generator: torch.Generator) -> torch.Tensor:
    """Warp each utterance's mel axis and blank a few bands and stretches with its mean (``(B, n_mels, T)``)."""
    batch, n_mels, frames = mel.shape
    alpha = 1.0 + config.warp * (2.0 * torch.rand(batch, generator=generator) - 1.0)
    mel = warp_mel(mel, alpha)
    mean = masked_mean(mel, mask).unsqueeze(-1)  # (B, n_mels, 1)
    keep = torch.ones_like(mel)
    for b in range(batch):
        length = int(mask[b].sum())
        for _ in range(config.freq_masks):
            width = int(torch.randint(0, config.freq_mask_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, n_mels - width + 1, (1,), generator=generator))
            keep[b, start : start + width, :] = 0.0
        for _ in range(config.time_masks):
            width = min(int(torch.randint(0, config.time_mask_width + 1, (1,), generator=generator)), length)
            start = int(torch.randint(0, length - width + 1, (1,), generator=generator))
            keep[b, :, start : start + width] = 0.0
    return keep * mel + (1.0 - keep) * mean


def train_recognizer(examples: Sequence[tuple[np.ndarray, list[int]]], config: RecognizerTrainConfig,
                     recognizer: PhoneRecognizer, min_log: float,
                     device: str | torch.device | None = None) -> tuple[PhoneRecognizer, dict]:
    """Train ``recognizer`` with CTC on ``examples``, ``(mel (n_mels, T), phone indices)`` with indices into
    ``recognizer.config.phones`` (the CTC class is index + 1); ``min_log`` pads. Returns it in eval mode
    and its first and last logged losses. ``device`` None: CUDA if available."""
    if config.steps < 1:
        raise ConfigError(f"the recogniser needs at least one training step, got steps={config.steps}")
    n_phones = len(recognizer.config.phones)
    usable = [(mel, phones) for mel, phones in examples
              if phones and mel.shape[1] <= config.max_frames and mel.shape[1] >= len(phones)]
    if not usable:
        raise ConfigError(f"no training example has phones, at most {config.max_frames} frames and at least as "
                          "many frames as phones (CTC needs a frame per phone)")
    if len(usable) < len(examples):
        logger.info("recogniser: %d of %d examples left out (no phones, too long, or fewer frames than phones)",
                    len(examples) - len(usable), len(examples))
    if config.freq_mask_width >= recognizer.config.mel.n_mels:
        raise ConfigError(f"freq_mask_width {config.freq_mask_width} must be below n_mels "
                          f"{recognizer.config.mel.n_mels}")
    if any(not 0 <= p < n_phones for _, phones in usable for p in phones):
        raise ConfigError(f"phone indices must lie in [0, {n_phones}) (the recogniser's inventory)")
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(device) if device is not None else default_device()
    recognizer = recognizer.to(device)
    optimizer = torch.optim.AdamW(recognizer.parameters(), lr=config.lr, weight_decay=1e-4)
    history, running = [], []
    for step in range(config.steps):
        lr = cosine_decay(config.lr, step, config.steps, config.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        chosen = [usable[i] for i in rng.integers(len(usable), size=config.batch_size)]
        mel, mask, targets, target_lengths = _collate(chosen, min_log)
        mel = _spec_augment(mel, mask, config, generator)
        recognizer.train()
        log_probs = recognizer.log_probs(mel.to(device), mask.to(device))  # (B, T, K)
        # CTC takes (T, B, K); phone index p is class p + 1 (class 0 is the blank).
        loss = F.ctc_loss(log_probs.transpose(0, 1), (targets + 1).to(device), mask.sum(dim=1).long().to(device),
                          target_lengths.to(device), blank=0, zero_infinity=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(recognizer.parameters(), 5.0)
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            history.append(float(np.mean(running)))
            logger.info("recogniser step %d: CTC loss %.3f, lr %.2e", step + 1, history[-1], lr)
            running = []
    recognizer.eval()
    return recognizer, {"loss_first": history[0], "loss_last": history[-1], "examples": len(usable)}


@torch.no_grad()
def transcribe(recognizer: PhoneRecognizer, mel: np.ndarray) -> list[str]:
    """Greedy phone transcription of one utterance's raw log-mel ``(n_mels, T)``."""
    device = next(recognizer.parameters()).device
    log_probs = recognizer.log_probs(torch.from_numpy(np.ascontiguousarray(mel)).unsqueeze(0).to(device))
    return recognizer.greedy_decode(log_probs[0])


def new_recognizer(phones: Sequence[str], mel_config) -> PhoneRecognizer:
    """A fresh recogniser over ``phones`` for ``mel_config`` (seed first for reproducibility)."""
    return PhoneRecognizer(PhoneRecognizerConfig(mel=mel_config, phones=tuple(phones)))
