"""Adversarial training of the VC decoder against a mel discriminator (``train.mel_adversary``).

The reconstruction and cycle terms are L1 losses, so the decoder learns the conditional mean of the
mel: blurred wherever the content code and the speaker vector leave detail open. A discriminator
(:class:`voiceconv.models.mel_discriminator.MelDiscriminator`) learns to tell real log-mels from the
decoder's reconstructions and, with ``conversions``, from the cycle's conversions to another voice
(:mod:`voiceconv.training.cycle`), which are what a user hears and have no real counterpart to be
compared with by L1. The decoder then gets two more terms, returned under their own keys and
weighted by ``lambdas`` like every other:

- ``loss/mel_adv``: least-squares GAN, every patch of a reconstruction or conversion toward "real";
- ``loss/mel_fm`` (``feature_matching``): L1 between the discriminator's feature maps of each
  reconstruction and of its own real mel, a perceptual reconstruction term that steadies the GAN.

Each training step first updates the discriminator on that step's outputs (detached), then computes
the decoder's terms with the updated discriminator, held fixed. (The vocoder trainer computes its
generator terms with the discriminator before its update; here the decoder meets the sharper one.) A
non-finite discriminator loss or gradient skips its update and the model's, and counts toward
``train.max_bad_steps`` like any other bad step. The discriminator and its optimizer are part of the
train state, so a resume is exact; neither is released. Padded frames of an output are replaced by the
real mel's, so that padding never tells the two apart (fully padded patches then score alike and add
nothing but a constant).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from voiceconv.errors import ConfigError
from voiceconv.models.mel_discriminator import MelDiscriminator, MelDiscriminatorConfig
from voiceconv.training.loop import weights_held
from voiceconv.vocoder.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss


@dataclass
class MelAdversaryConfig:
    discriminator: MelDiscriminatorConfig = field(default_factory=MelDiscriminatorConfig)
    lr: float = 2e-4  # the discriminator's Adam learning rate (constant)
    betas: tuple[float, float] = (0.5, 0.9)  # the usual GAN betas: less momentum than the generator's Adam
    grad_clip: float = 5.0  # of the discriminator's gradient; <= 0 disables clipping
    conversions: bool = True  # also judge the cycle's conversions to other voices (needs train.cycle)
    feature_matching: bool = True  # add loss/mel_fm on the reconstructions

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"train.mel_adversary.lr must be positive, got {self.lr}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.mel_adversary.betas must be two values in [0, 1), got {self.betas}")
        if isinstance(self.discriminator, dict):  # built by hand rather than by the config loader
            self.discriminator = MelDiscriminatorConfig(**self.discriminator)


def build_discriminator(config: MelAdversaryConfig, device: torch.device) -> tuple[MelDiscriminator,
                                                                                   torch.optim.Optimizer]:
    """A fresh discriminator on ``device`` and its Adam optimizer."""
    discriminator = MelDiscriminator(config.discriminator).to(device)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=tuple(config.betas))
    return discriminator, optimizer


def fill_padding(output: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``output (n, n_mels, T)`` with its padded frames (``mask (n, T)`` 0) taken from ``real`` (same shape)."""
    if mask is None:
        return output
    return torch.where(mask[:, None, :] > 0, output, real)


@contextlib.contextmanager
def _held_fixed(discriminator: torch.nn.Module):
    """No weight gradients (:func:`voiceconv.training.loop.weights_held`) and, in eval mode, no spectral-norm
    power iteration: the decoder's terms only read the discriminator."""
    was_training = discriminator.training
    discriminator.eval()
    try:
        with weights_held(discriminator):
            yield discriminator
    finally:
        discriminator.train(was_training)


def _outputs(real: torch.Tensor, reconstruction: torch.Tensor, conversions: torch.Tensor | None,
             mask: torch.Tensor | None) -> torch.Tensor:
    """Reconstructions ``(B, n_mels, T)`` and conversions ``(n, n_mels, T)`` in one batch, padding filled."""
    fakes = [fill_padding(reconstruction, real, mask)]
    if conversions is not None:
        n = conversions.shape[0]
        fakes.append(fill_padding(conversions, real[:n], None if mask is None else mask[:n]))
    return torch.cat(fakes).float()


def discriminator_step(discriminator: torch.nn.Module, optimizer: torch.optim.Optimizer, config: MelAdversaryConfig,
                       real: torch.Tensor, reconstruction: torch.Tensor, conversions: torch.Tensor | None,
                       mask: torch.Tensor | None, agree: Callable[[bool], bool] | None = None) -> dict[str, float]:
    """One discriminator update: real ``(B, n_mels, T)`` (normalised log-mels) toward 1, this step's
    reconstructions ``(B, n_mels, T)`` and conversions ``(n, n_mels, T)`` (or None), detached, toward 0.
    Skipped when the loss or the gradient is not finite; ``agree(finite)`` makes that one decision for
    every process (DDP). Returns ``loss/mel_disc``, ``grad_norm_mel_disc`` and ``skipped_mel_disc``."""
    discriminator.train()
    with torch.autocast(real.device.type, enabled=False):
        fake = _outputs(real, reconstruction.detach(), None if conversions is None else conversions.detach(), mask)
        loss = discriminator_loss(discriminator(real.float()), discriminator(fake))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(discriminator.parameters(), max_norm)
    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
    if agree is not None:
        finite = agree(finite)
    if finite:
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    return {"loss/mel_disc": float(loss.detach()), "grad_norm_mel_disc": float(grad_norm),
            "skipped_mel_disc": 0.0 if finite else 1.0}


def generator_terms(discriminator: torch.nn.Module, config: MelAdversaryConfig, real: torch.Tensor,
                    reconstruction: torch.Tensor, conversions: torch.Tensor | None,
                    mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``loss/mel_adv`` (and ``loss/mel_fm``) for the decoder, with the gradient through ``reconstruction
    (B, n_mels, T)`` and ``conversions (n, n_mels, T)``; the discriminator is held fixed. In float32."""
    with _held_fixed(discriminator), torch.autocast(real.device.type, enabled=False):
        fake_out = discriminator(_outputs(real, reconstruction, conversions, mask))
        out = {"loss/mel_adv": generator_adversarial_loss(fake_out)}
        if config.feature_matching:
            batch = real.shape[0]
            with torch.no_grad():
                real_out = discriminator(real.float())
            # The first B outputs are the reconstructions, each paired with its own real mel.
            reconstruction_out = [(logits[:batch], [f[:batch] for f in maps]) for logits, maps in fake_out]
            out["loss/mel_fm"] = feature_matching_loss(real_out, reconstruction_out)
    return out
