"""Test-time speaker adaptation: fit the speaker vector to the reference clips by reconstruction.

The speaker encoder maps a new voice to a vector in one pass, but it learned from a few hundred
training voices and places an unseen voice only roughly: on held-out speakers, the vector it gives
rebuilds the speaker's own reference clips with about a fifth more error than a vector fitted to
them. Fitting uses the auto-encoder's own training objective (L1 between the decoder's output and
the reference log-mel, from the reference's own content code), with every weight of the model
frozen and only the ``(D,)`` speaker vector free. It starts from the encoder's vector, so zero
steps is plain AdaIN-VC, and it never sees a judge.

The content codes are computed once; each step is one decoder pass (forward and backward) per
reference clip, so the cost grows with the reference seconds (clips are cut to
:data:`MAX_ADAPT_FRAMES`). It is paid once per voice: a saved ``.spk`` keeps the fitted vector.

A reference recorded on another microphone differs from the training speech by a smooth gain curve
over the mel bands (EQ and tilt; a room smears over time and a phone line cuts the band off, which
such a curve cannot model), and the vector would otherwise learn it and carry it into every
conversion. ``channel_basis`` gives each clip its own smooth curve (the first ``K`` cosines over the
mel axis, in the raw log-mel domain where a channel adds), solved in closed form before each step
from that clip's current residual and then discarded: the vector is fitted to what the curve cannot
explain. A speaker's own spectral tilt is also smooth, so the curve takes some voice with it. The
trade is measured, not assumed (``recipes/mini/local/select_adaptation.py --channel-basis``), and with
the shipped model it does not pay, so it is off by default (:data:`DEFAULT_CHANNEL_BASIS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from voiceconv.errors import VoiceconvError
from voiceconv.features import smooth_projection

# 10 Adam steps at lr 0.01, chosen without any judge on held-out words of the trainer's validation
# speakers (recipes/mini/local/select_adaptation.py --channel-draws 3), as the lowest mean of two
# errors: with a clean reference (0.265 unfitted, 0.229 after 10 steps, 0.221 after 50) and with the
# reference through a random recording channel (0.281 unfitted, 0.274 after 10, 0.385 after 50:
# longer fitting learns the channel instead of the voice).
DEFAULT_ADAPT_STEPS = 10
DEFAULT_ADAPT_LR = 0.01
DEFAULT_ADAPT_PRIOR = 0.0
# Cosines in each reference clip's channel curve; 0: none. Chosen without any judge (select_adaptation.py
# --channel-draws 3 --channel-basis 0,2,4,8, round 11, held-out L1 after 10 steps): a curve of 2-8 cosines
# rebuilt unseen words worse from a clean reference (0.285-0.289 against 0.258) and worse through a
# random channel too (0.311-0.315 against 0.301). The curve takes the voice's own spectral tilt with the channel.
DEFAULT_CHANNEL_BASIS = 0
# ~8 s per clip at 86 frames/s: longer references add cost, not information about the timbre.
MAX_ADAPT_FRAMES = 688


@dataclass
class Adaptation:
    """The fitted vector ``(D,)`` and the reference reconstruction L1 before and after fitting.

    With a channel curve (``channel_basis``) both losses include each clip's curve, which is then
    discarded, so they are lower than what the vector alone rebuilds.
    """

    vector: torch.Tensor
    steps: int
    loss_before: float
    loss_after: float


def adapt_speaker(model, mels: list[torch.Tensor], init: torch.Tensor, steps: int = DEFAULT_ADAPT_STEPS,
                  lr: float = DEFAULT_ADAPT_LR, prior: float = DEFAULT_ADAPT_PRIOR,
                  channel_basis: int = DEFAULT_CHANNEL_BASIS) -> Adaptation:
    """Fit ``init (D,)`` so that ``model`` rebuilds the reference log-mels ``[(n_mels, T_i), ...]``.

    ``model`` is a :class:`~voiceconv.models.vc_model.VCModel`; its weights are not changed and
    get no ``.grad`` (gradients are taken with respect to the vector only). Deterministic for a
    given input. ``prior`` weighs a pull ``mean((v - init)^2)`` toward the encoder's vector. Returns
    an :class:`Adaptation` (losses without the prior); with ``steps == 0`` the vector is ``init``.
    ``channel_basis`` cosines per clip model its recording channel during the fit (module
    docstring); the losses then include each clip's curve.
    """
    if steps < 0:
        raise VoiceconvError(f"adaptation steps must be >= 0, got {steps}")
    if not mels:
        raise VoiceconvError("speaker adaptation needs at least one reference clip")
    if not (prior >= 0):
        raise VoiceconvError(f"adaptation prior weight must be >= 0, got {prior}")
    if not (lr > 0):
        raise VoiceconvError(f"adaptation learning rate must be > 0, got {lr}")
    n_mels = int(model.mel_std.shape[0])
    if isinstance(channel_basis, bool) or not isinstance(channel_basis, int) or not 0 <= channel_basis <= n_mels:
        raise VoiceconvError(f"channel_basis must be a whole number of cosines from 0 (no channel curve) to "
                             f"{n_mels}, got {channel_basis!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            targets = [model.normalize(mel[..., :MAX_ADAPT_FRAMES].to(device).float().unsqueeze(0))
                       for mel in mels]  # each (1, n_mels, T_i), normalised as in training
            contents = [model.content_encoder(target)[0] for target in targets]  # each (1, C, T_i')
        start = init.detach().to(device).float().reshape(1, -1)  # (1, D)
        vector = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([vector], lr=lr)

        curve_fit = _channel_curve_fit(channel_basis, model.mel_std.detach().to(device).float())

        def loss_of(speaker: torch.Tensor) -> torch.Tensor:
            errors = []
            for content, target in zip(contents, targets):
                rebuilt = model.decoder(content, speaker, target.shape[-1])  # (1, n_mels, T), normalised
                if curve_fit is not None:
                    # The clip's channel: fixed within the step (no gradient), so the vector is
                    # fitted to the residual the curve leaves.
                    rebuilt = rebuilt + curve_fit(target - rebuilt.detach())
                errors.append((rebuilt - target).abs().mean())
            return torch.stack(errors).mean()

        before = after = None
        for _ in range(steps):
            loss = loss_of(vector)
            before = float(loss.detach()) if before is None else before
            if prior > 0:
                loss = loss + prior * (vector - start).pow(2).mean()
            # Gradient w.r.t. the vector only: the model's parameters never accumulate .grad.
            (vector.grad,) = torch.autograd.grad(loss, [vector])
            optimizer.step()
        with torch.no_grad():
            after = float(loss_of(vector))
        return Adaptation(vector.detach()[0].cpu(), steps, after if before is None else before, after)
    finally:
        model.train(was_training)


def _channel_curve_fit(n_basis: int, mel_std: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function: residual ``(1, n_mels, T)`` (normalised) -> its smooth channel curve ``(1, n_mels, 1)``.

    The curve is the least-squares fit of the residual's time average by the first ``n_basis``
    cosines over the mel axis (a constant, a tilt, broad bumps), made in the raw log-mel domain,
    where a gain per band is a constant per band, and mapped back to the normalised domain, where
    each band is divided by its own ``mel_std``. None for ``n_basis == 0``.
    """
    if n_basis == 0:
        return None
    projection = smooth_projection(mel_std.shape[0], n_basis).to(mel_std.device)  # onto the span of the cosines

    def fit(residual: torch.Tensor) -> torch.Tensor:
        raw = residual.mean(dim=-1)[0] * mel_std  # (n_mels,): average residual in raw log-mel units
        return ((projection @ raw) / mel_std).reshape(1, -1, 1)

    return fit
