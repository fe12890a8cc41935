"""A patch discriminator on log-mel spectrograms, for adversarial training of the VC decoder.

An L1-trained decoder predicts the conditional mean of the mel, which is blurred wherever the content
code and the speaker vector leave the detail open: smeared harmonics, soft formant transitions, a
noise floor in pauses. Chou et al. (2018) added a second, adversarial stage for this; MelGAN-VC trains its
generator against discriminators on mel spectrograms too. This one reads the (normalised)
log-mel as a one-channel image and scores overlapping time-frequency patches, so it judges local
texture (sharpness, harmonic structure), not the voice or the words, which the other terms own.

It is small on purpose (0.06 M parameters): with it, the shipped configuration trains at 1.3-1.5 steps/s on
two CPU cores, against about 2.0 without it. It is used only in training and never ships with the
released model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from voiceconv.errors import ConfigError

LRELU_SLOPE = 0.2


@dataclass
class MelDiscriminatorConfig:
    channels: tuple[int, ...] = (16, 32, 64, 64)  # per 3x3 conv layer
    # (frequency, time) stride per layer: frequency is halved three times (80 -> 10 bands) and time twice,
    # so each output logit sees a patch of 47 bands x 31 frames (0.36 s). Time is halved in the first
    # layer rather than the third: the same output grid (31 frames of context instead of 25) in 64 % of the
    # time (forward and backward of 80 mels of 128 frames, one CPU thread: 0.16 s against 0.25 s).
    strides: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 1), (1, 1))

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.strides = tuple(tuple(int(s) for s in stride) for stride in self.strides)
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ConfigError(f"mel discriminator: one stride per layer, got {len(self.channels)} channels and "
                             f"{len(self.strides)} strides")
        if min(self.channels) < 1:
            raise ConfigError(f"mel discriminator channels must be positive, got {self.channels}")
        if any(len(s) != 2 or min(s) < 1 for s in self.strides):
            raise ConfigError(f"mel discriminator strides must be (frequency, time) pairs >= 1, got {self.strides}")


Output = tuple[torch.Tensor, list[torch.Tensor]]  # (logits (B, F', T'), feature maps), as the vocoder's


class MelDiscriminator(nn.Module):
    """``mel (B, n_mels, T)`` (normalised log-mel) -> ``[(logits (B, F', T'), feature maps)]``.

    The list holds one entry so that the vocoder's least-squares and feature-matching losses
    (:mod:`voiceconv.vocoder.losses`), which take one entry per sub-discriminator, apply as they are.
    Spectral normalisation keeps the discriminator approximately Lipschitz, which is what keeps a GAN stable when
    its generator starts from a converged reconstruction model.
    """

    def __init__(self, config: MelDiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or MelDiscriminatorConfig()
        layers, previous = [], 1
        for channels, stride in zip(config.channels, config.strides):
            layers.append(spectral_norm(nn.Conv2d(previous, channels, 3, stride=stride, padding=1)))
            previous = channels
        self.layers = nn.ModuleList(layers)
        self.output = spectral_norm(nn.Conv2d(previous, 1, 3, padding=1))

    def forward(self, mel: torch.Tensor) -> list[Output]:
        if mel.dim() != 3:
            raise ValueError(f"mel discriminator expects (batch, n_mels, frames), got {tuple(mel.shape)}")
        x = mel.unsqueeze(1)  # (B, 1, n_mels, T): the mel as a one-channel image
        features = []
        for layer in self.layers:
            x = nn.functional.leaky_relu(layer(x), LRELU_SLOPE)
            features.append(x)
        logits = self.output(x).squeeze(1)  # (B, F', T')
        return [(logits, features)]
