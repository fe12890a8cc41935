"""Cycle consistency: convert part of each batch to another voice and back (``train.cycle``).

An AdaIN-VC auto-encoder is trained only to rebuild an utterance in its own voice, yet it is used
to render an utterance in *another* voice. Nothing in the reconstruction loss asks that a
conversion keeps the words: the decoder never sees a content code paired with a foreign speaker
vector. The cycle term closes that gap without parallel data (as CycleGAN-VC and the cycle
terms of several VAE-VC papers do, here inside the auto-encoder itself): each chosen utterance
``x`` of speaker ``a`` is decoded with the speaker vector of another utterance in the batch
(speaker ``b``), the content encoder reads that converted mel, and the decoder rebuilds it with
``a``'s vector; the result must match ``x`` (``loss/cycle``, L1 in the normalised domain, as
``loss/rec``). The content encoder thereby learns to read the words off a converted mel, and the
decoder to render words that survive the change of voice. :meth:`VCModel.forward` computes the
term, so that it runs inside the (possibly distributed) forward pass; this module only chooses
the partners. Its weight is ``lambdas["loss/cycle"]``, like every loss.

``detach_conversion`` stops the term's gradient at the converted mel. With it flowing (the default,
as round 9 trained), the first decoder pass is rewarded for hiding the source utterance in its output
so that the way back is easier -- the "steganography" that CycleGAN reports. Round 9 showed the
symptom: the judge's similarity fell by 0.012 and the gap between converting from the target's own
content and from another speaker's widened from 0.109 to 0.121 (``benchmarks/similarity_ceiling.py``).
Detached, the term only teaches the content encoder to read converted speech and the decoder to
rebuild from it; the conversion itself answers to nothing but its own reconstruction.

``code_consistency`` adds ``loss/cycle_code`` (weight ``lambdas["loss/cycle_code"]``): the content
code the encoder reads off the converted mel must match the code that mel was decoded from (the
posterior mean of the content encoder's input, warped or through a channel when training does that;
held fixed as the target), with the gradient through the conversion. It follows AutoVC's content-code
loss, applied here to a conversion to another voice rather than to the reconstruction. It asks the
conversion to keep the words, which the detached round trip no longer does (the detached probe lost
4.5 points of WER). The code has passed instance normalisation, so it carries less of the source's
voice than the mel, but not none (``benchmarks/similarity_ceiling.py``): the term also rewards keeping
some of it, the trade that round 10 (``recipes/mini/conf/shipped_v10.yaml``) measures. With
``detach_conversion`` it costs one more content-encoder pass.

Cost: one more decoder and content-encoder pass for each chosen utterance, so ``share`` trades the
term's signal against step time on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from voiceconv.errors import ConfigError


@dataclass
class CycleConfig:
    share: float = 0.5  # fraction of each batch sent round the cycle (each costs a decoder and an encoder pass)
    detach_conversion: bool = False  # stop the term's gradient at the converted mel (no reward for hiding the source)
    code_consistency: bool = False  # add loss/cycle_code: the converted mel's content code against the source's

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"cycle.share must be in (0, 1], got {self.share}")


def draw_partners(batch_size: int, config: CycleConfig, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` batch indices: utterance ``i < n`` is converted to the voice of utterance ``partner[i]``.

    ``n = ceil(share * batch_size)``. The batch is rolled by a random shift in ``1 .. batch_size - 1``,
    so no utterance is its own partner (the batcher draws speakers independently, so most partners
    are other speakers; the rest are still a valid, harder-to-cheat reconstruction).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    count = max(1, min(batch_size, math.ceil(config.share * batch_size)))
    if batch_size == 1:
        return torch.zeros(1, dtype=torch.long)
    shift = int(torch.randint(1, batch_size, (1,), generator=generator))
    return (torch.arange(count) + shift) % batch_size
