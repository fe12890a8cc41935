"""Adversarial speaker classifier on the content code (Chou et al. 2018), through gradient reversal.

The classifier learns to name the training speaker from the content code and minimises its cross
entropy ``loss/adv``. Between it and the content encoder sits a gradient-reversal layer, so the
same backward pass pushes the encoder to *maximise* that loss, i.e. to drop speaker information.

Chou et al. alternated a classifier update and an auto-encoder update with two optimisers. Gradient
reversal gives the same min-max game with one optimiser and one backward pass, so the trainer just
sums ``lambdas[k] * out[k]`` and never branches on the variant.

Schedule (driven by ``step`` from ``VCModel.forward``): for ``pretrain_steps`` the reversal
coefficient is 0 (the classifier learns, the encoder is untouched by it), then it ramps linearly
to ``max_coefficient`` over ``ramp_steps``; an adversary that starts from chance gives the
encoder nothing useful to fight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from voiceconv.errors import ConfigError
from voiceconv.models.layers import SameConv1d, activation, gradient_reversal, masked_mean


@dataclass
class SpeakerClassifierConfig:
    channels: int = 256  # Chou 2018 uses a 5-layer conv classifier; 3 layers of 256 suffice on a 128-d code
    n_layers: int = 3  # conv layers before temporal pooling (our choice)
    kernel_size: int = 5  # same receptive-field step as the encoders
    activation: str = "lrelu"  # Chou 2018 uses leaky ReLU
    dropout: float = 0.0  # AdaIN-VC dropout_rate
    pretrain_steps: int = 5000  # reversal coefficient is 0 before this step (classifier warm-up)
    ramp_steps: int = 20000  # then grows linearly to max_coefficient over this many steps (cf. KL annealing)
    max_coefficient: float = 1.0  # final gradient-reversal coefficient

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.pretrain_steps < 0 or self.ramp_steps < 0:
            raise ConfigError("speaker_classifier: n_layers must be >= 1, pretrain_steps and ramp_steps >= 0")

    def coefficient(self, step: int) -> float:
        """Gradient-reversal coefficient at training ``step``."""
        if step < self.pretrain_steps:
            return 0.0
        if self.ramp_steps == 0:
            return self.max_coefficient
        return self.max_coefficient * min(1.0, (step - self.pretrain_steps) / self.ramp_steps)


class SpeakerClassifier(nn.Module):
    """``content (B, C, T')`` -> speaker logits ``(B, n_speakers)`` (one prediction per utterance)."""

    def __init__(self, in_channels: int, n_speakers: int, config: SpeakerClassifierConfig):
        super().__init__()
        self.config = config
        layers = []
        channels = in_channels
        for _ in range(config.n_layers):
            layers += [SameConv1d(channels, config.channels, config.kernel_size), activation(config.activation),
                       nn.Dropout(config.dropout)]
            channels = config.channels
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(channels, n_speakers)

    def forward(self, content: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``content (B, C, T')``, ``mask (B, T')`` -> ``(B, n_speakers)``."""
        return self.out(masked_mean(self.convs(content), mask))

    def adversarial_loss(self, content: torch.Tensor, speaker_ids: torch.Tensor, step: int,
                         mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Cross entropy through gradient reversal, and metrics ``metric/adv_accuracy``, ``metric/adv_coefficient``."""
        coefficient = self.config.coefficient(step)
        logits = self(gradient_reversal(content, coefficient), mask)
        loss = nn.functional.cross_entropy(logits, speaker_ids.long())
        accuracy = (logits.argmax(dim=1) == speaker_ids).float().mean()
        return loss, {"metric/adv_accuracy": accuracy.detach(),
                      "metric/adv_coefficient": torch.tensor(coefficient, device=content.device)}
