"""Vocoder training losses, each returned under its ``loss/*`` key and weighted by the config's lambdas.

- ``loss/mel``: L1 between log-mels of the output and the target (HiFi-GAN's reconstruction term);
- ``loss/stft``: multi-resolution STFT loss, spectral convergence + log-magnitude L1 (Parallel
  WaveGAN); it covers the band above the mel's fmax and the fine spectral detail the mel smooths;
- ``loss/fm``: feature matching, L1 between discriminator feature maps on real and generated audio;
- ``loss/adv``: least-squares GAN generator loss; ``loss/disc`` is the discriminator's own loss.

The per-sub-discriminator terms are averaged (as in Vocos), so the lambdas do not depend on how
many periods or resolutions are configured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voiceconv.features import MelConfig, MelSpectrogram

# Parallel WaveGAN's (n_fft, hop, win) resolutions for the multi-resolution STFT loss.
DEFAULT_STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


class MelLoss(nn.Module):
    """``L1(log-mel(output), log-mel(target))`` with the project's mel front end."""

    def __init__(self, mel: MelConfig):
        super().__init__()
        self.mel = MelSpectrogram(mel)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``output, target: (B, L)`` -> scalar."""
        return F.l1_loss(self.mel(output), self.mel(target))


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence + mean |log|S| - log|S_hat||."""

    def __init__(self, resolutions=DEFAULT_STFT_RESOLUTIONS):
        super().__init__()
        self.resolutions = [tuple(int(v) for v in r) for r in resolutions]
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", torch.hann_window(win), persistent=False)

    @staticmethod
    def magnitude(audio: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, n_fft, hop, window.shape[0], window, center=True, return_complex=True)
        # The epsilon under the root keeps its gradient finite at exact zeros (which a clamp after the root
        # would turn into 0 * inf = NaN); the floor keeps log() finite in digital silence.
        return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-12).clamp(min=1e-7)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``output, target: (B, L)`` -> scalar."""
        total = output.new_zeros(())
        for i, (n_fft, hop, _) in enumerate(self.resolutions):
            window = getattr(self, f"window{i}")
            out_mag = self.magnitude(output, n_fft, hop, window)
            ref_mag = self.magnitude(target, n_fft, hop, window)
            convergence = torch.linalg.norm(ref_mag - out_mag) / torch.linalg.norm(ref_mag).clamp(min=1e-7)
            log_magnitude = F.l1_loss(torch.log(out_mag), torch.log(ref_mag))
            total = total + convergence + log_magnitude
        return total / len(self.resolutions)


def feature_matching_loss(real: list, fake: list) -> torch.Tensor:
    """Mean over sub-discriminators of the summed per-layer L1 between feature maps.

    ``real``/``fake``: one ``(logits, [feature maps])`` per sub-discriminator; the real features are
    targets, so they carry no gradient.
    """
    total = 0.0
    for (_, real_maps), (_, fake_maps) in zip(real, fake):
        total = total + sum(F.l1_loss(f, r.detach()) for r, f in zip(real_maps, fake_maps))
    return total / len(real)


def generator_adversarial_loss(fake: list) -> torch.Tensor:
    """Least-squares GAN: the generator wants every logit at 1 (mean over sub-discriminators)."""
    return sum(torch.mean((1.0 - logits) ** 2) for logits, _ in fake) / len(fake)


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Least-squares GAN: real logits toward 1, generated toward 0 (mean over sub-discriminators)."""
    total = 0.0
    for (real_logits, _), (fake_logits, _) in zip(real, fake):
        total = total + torch.mean((1.0 - real_logits) ** 2) + torch.mean(fake_logits**2)
    return total / len(real)
