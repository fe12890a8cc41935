"""Speaker-vector invariance to the recording channel (``train.speaker_invariance``).

Measured on the shipped round 11 (``benchmarks/robustness.py --clean-references``): when only the
*sources* pass through another microphone's EQ or a phone line, the conversion keeps 95-108 % of its
clean similarity gain; when the *references* do too, it keeps 42-56 %. The speaker vector takes the
channel with the voice. Training already feeds the speaker encoder corrupted references
(``train.channel``), but only through the reconstruction: the decoder must rebuild the clean mel
from whatever vector it gets, which asks the vector to be *useful* under a channel, not to be the
*same* one. A stronger channel on that path (``recipes/mini/conf/probe_channel.yaml``) did not close
the gap.

This term asks for it directly. For a share of each batch, the clean speaker-encoder input (the
reference segment, before ``train.channel``) is passed through a channel of its own (this config's
``channel``: by default every clip gets an EQ curve, so none stays clean, and telephone band limits
more often than the reconstruction's channel), and its vector is pulled toward the vector of the same
clean segment: ``loss/speaker_invariance = mean(1 - cos(s(corrupted), stop_gradient(s(clean))))``.
The term's gradient flows only through the corrupted pass: it asks the encoder to read a corrupted
clip as it reads the clean one, not to move the clean reading toward the corrupted one. The weights
are shared, so the clean vectors move too as the encoder changes, and a stop-gradient alone does not
prevent the space from shrinking toward one point; the reconstruction, which needs distinct voices,
is what keeps the clean vectors apart. Cosine, because conversion uses the vector's direction
through AdaIN and every similarity score compares directions.

:meth:`VCModel.forward` computes the term (so that it runs inside the possibly distributed forward);
this module draws its inputs. Weight: ``lambdas["loss/speaker_invariance"]``, like every loss (a key
without a lambda weighs 1, against the reconstruction's 10; set it in the config).
Cost: two more speaker-encoder passes over ``share`` of the batch (the speaker encoder is the
cheapest of the three networks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from voiceconv.errors import ConfigError
from voiceconv.features import MelConfig
from voiceconv.training.channel import ChannelConfig, corrupt


def _invariance_channel() -> ChannelConfig:
    # An EQ curve on every clip, so that none stays clean (a clean copy would add a zero to the mean),
    # and band limits more often than the reconstruction's channel: EQ and phone lines are what the
    # references lose most to (robustness.py: eq 56 %, phone 42 % of the clean gain).
    return ChannelConfig(probability=1.0, eq_probability=1.0, band_limit_probability=0.6,
                         reverb_probability=0.3, noise_probability=0.3)


@dataclass
class SpeakerInvarianceConfig:
    share: float = 0.5  # fraction of each batch whose reference is also embedded through a channel
    channel: ChannelConfig = field(default_factory=_invariance_channel)  # this term's own channel draws

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"speaker_invariance.share must be in (0, 1], got {self.share}")


def invariance_pair(speaker_mel: torch.Tensor, speaker_mask: torch.Tensor | None, config: SpeakerInvarianceConfig,
                    generator: torch.Generator, mel_config: MelConfig
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(clean, corrupted, mask)`` for the first ``ceil(share * B)`` clean references.

    ``speaker_mel (B, n_mels, T)`` is the speaker encoder's input before any channel, ``speaker_mask
    (B, T)`` its real frames. ``clean`` and ``corrupted`` are ``(n, n_mels, T)``, ``mask`` ``(n, T)``
    (or None). The draws depend only on ``generator``.
    """
    batch = speaker_mel.shape[0]
    count = max(1, min(batch, math.ceil(config.share * batch)))
    clean = speaker_mel[:count]
    mask = speaker_mask[:count] if speaker_mask is not None else None
    return clean, corrupt(clean, config.channel, generator, mel_config, mask), mask
