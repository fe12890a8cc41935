"""STFT and inverse STFT on the mel front end's frame grid.

:class:`voiceconv.features.MelSpectrogram` reflect-pads ``(n_fft - hop) / 2`` samples on each side
and runs ``torch.stft(center=False)``, so frame ``t`` covers input samples
``[t * hop - pad, t * hop - pad + n_fft)`` and ``L`` samples give ``L // hop`` frames. A waveform
generator working on that grid must invert it exactly: ``T`` frames back to ``T * hop`` samples,
each frame overlap-added where the analysis took it from.

``torch.istft`` cannot do this. With ``center=True`` it places frame ``t`` at ``t * hop - n_fft / 2``
(half a hop too early) and drops everything left of sample 0; with ``center=False`` it refuses any
window whose overlap-add envelope touches zero, which a Hann window does at the buffer edges. So
:func:`istft` does what ``torch.istft`` does inside (inverse real FFT, window, overlap-add, divide
by the summed squared window) and then trims ``pad`` samples on each side instead of ``n_fft / 2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padded_window(window: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Centre a ``win_length`` window in ``n_fft`` samples, as ``torch.stft`` does."""
    left = (n_fft - window.shape[0]) // 2
    return F.pad(window, (left, n_fft - window.shape[0] - left))


def _pad_to_grid(audio: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """``(B, L)`` -> ``(B, L + 2 * pad)`` as the mel front end pads, so that frame ``t`` starts at ``t * hop``."""
    pad = (n_fft - hop_length) // 2
    # Reflection needs more samples than the pad; a one- or two-frame signal is zero-padded instead.
    mode = "reflect" if audio.shape[-1] > pad else "constant"
    # padding needs a channel axis: (B, 1, L) -> pad -> (B, L + 2 * pad)
    return F.pad(audio.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)


def stft(audio: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT on the mel grid: ``(B, L)`` -> ``(B, n_fft // 2 + 1, L // hop)``."""
    padded = _pad_to_grid(audio, n_fft, hop_length)
    return torch.stft(padded, n_fft=n_fft, hop_length=hop_length, win_length=window.shape[0],
                      window=window, center=False, return_complex=True)


def overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Sum frames ``(B, n_fft, T)`` placed every ``hop_length`` samples -> ``(B, (T - 1) * hop + n_fft)``.

    When ``hop_length`` divides ``n_fft`` (the usual case) each frame is ``n_fft / hop`` hop-sized
    pieces, and piece ``k`` of every frame lands in one contiguous run shifted by ``k`` hops: that
    is ``n_fft / hop`` strided additions. That made :func:`istft` 5x faster on the CPU than with
    ``F.fold`` (RTF 0.0020 -> 0.0004 on 60 s, 2 threads), which stays as the fallback for other hops.
    """
    batch, n_fft, n_frames = frames.shape
    length = (n_frames - 1) * hop_length + n_fft
    if n_fft % hop_length:
        # fold treats the n_fft axis as one (1 x n_fft) patch per frame and sums overlapping patches.
        folded = F.fold(frames, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop_length))
        return folded[:, 0, 0]  # (B, 1, 1, length) -> (B, length)
    pieces = n_fft // hop_length
    # (B, n_fft, T) -> (B, pieces, hop, T) -> (B, pieces, T, hop) -> (B, pieces, T * hop): piece k of
    # frame t covers samples [t * hop + k * hop, (t + 1) * hop + k * hop).
    runs = frames.reshape(batch, pieces, hop_length, n_frames).transpose(2, 3).reshape(batch, pieces, -1)
    signal = frames.new_zeros(batch, length)
    for k in range(pieces):
        signal[:, k * hop_length : k * hop_length + n_frames * hop_length] += runs[:, k]
    return signal


def istft(spec: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`stft`: ``(B, n_fft // 2 + 1, T)`` complex -> ``(B, T * hop)`` real.

    Least-squares overlap-add (Griffin and Lim 1984): each frame is windowed again and the sum is
    divided by the summed squared window, so an unmodified STFT comes back to the signal exactly.
    """
    n_frames = spec.shape[-1]
    pad = (n_fft - hop_length) // 2
    full_window = padded_window(window, n_fft).to(spec.real.dtype)
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * full_window[None, :, None]  # (B, n_fft, T)
    signal = overlap_add(frames, hop_length)[:, pad : pad + n_frames * hop_length]  # (B, T * hop)
    return signal / _envelope(full_window, hop_length, n_frames)


def _envelope(full_window: torch.Tensor, hop_length: int, n_frames: int) -> torch.Tensor:
    """The summed squared window that :func:`istft` divides by, trimmed like the signal: ``(T * hop,)``."""
    n_fft = full_window.shape[0]
    pad = (n_fft - hop_length) // 2
    # The envelope is the same overlap-add applied to the squared window of every frame.
    squared = full_window.square()[None, :, None].expand(1, n_fft, n_frames)  # a view, no copies
    envelope = overlap_add(squared, hop_length)[0, pad : pad + n_frames * hop_length]
    # Only a window with zeros inside the trimmed range (hop == n_fft with Hann) gets near zero here.
    return envelope.clamp(min=1e-11)


def griffin_lim_phase(magnitude: torch.Tensor, angles: torch.Tensor, n_iter: int, momentum: float,
                      n_fft: int, hop_length: int, window: torch.Tensor, floor: float = 1e-16) -> torch.Tensor:
    """``n_iter`` fast Griffin-Lim iterations (Perraudin et al. 2013) on the mel grid.

    ``magnitude (B, n_bins, T)`` real and ``angles (B, n_bins, T)`` complex (any modulus) ->
    unit-modulus angles ``(B, n_bins, T)`` whose spectrum ``magnitude * angles`` is closer to the
    STFT of a real signal. Differentiable, so a generator can be trained through it: each
    iteration mixes only the ``n_fft / hop`` frames that overlap, which keeps chunked decoding exact.
    Each modulus is clamped at ``floor`` before dividing by it: the gradient of ``z / |z|`` grows as
    ``1 / |z|``, so a generator trained through the iterations uses a floor at the level of silence
    (bins below it keep a modulus under 1, which only matters where the spectrum is silent anyway).
    """
    if not torch.is_grad_enabled() or not (magnitude.requires_grad or angles.requires_grad):
        return _griffin_lim_phase(magnitude, angles, n_iter, momentum, n_fft, hop_length, window, floor)
    angles = angles / angles.abs().clamp(min=floor)
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(magnitude * angles, n_fft, hop_length, window), n_fft, hop_length, window)
        # Momentum extrapolates along the last update: angles = rebuilt - a/(1+a) * previous.
        angles = rebuilt - previous * (momentum / (1 + momentum))
        angles = angles / angles.abs().clamp(min=floor)
        previous = rebuilt
    return angles


def _squared_modulus(z: torch.Tensor) -> torch.Tensor:
    """``|z|^2`` as a real tensor, from the real and imaginary parts (3x faster on the CPU than complex ``abs``)."""
    return z.real.square().addcmul_(z.imag, z.imag)


def _unit_modulus_(z: torch.Tensor, floor: float) -> torch.Tensor:
    """``z / max(|z|, floor)`` in place."""
    return z.mul_(_squared_modulus(z).clamp_(min=floor * floor).rsqrt_())


def _griffin_lim_phase(magnitude, angles, n_iter, momentum, n_fft, hop_length, window, floor):
    """The same iterations as :func:`griffin_lim_phase` without autograd (decoding), 2.4x faster.

    The spectra are kept as ``(B, T, n_bins)`` so that every FFT runs over contiguous memory, the frames
    are cut with ``unfold`` and transformed with one ``rfft`` (what ``torch.stft`` does, without its
    transposes), the overlap-add envelope is computed once, and the elementwise steps run in place. The
    loop is memory-bound (a minute of audio is a 21 MB spectrum), so the magnitude is folded into the
    real scale that normalises the modulus, ``z * (magnitude / |z|)``, rather than applied to the
    complex spectrum in a pass of its own. The waveform differs from the autograd path's only by float
    rounding (tested).
    """
    n_frames = magnitude.shape[-1]
    pad = (n_fft - hop_length) // 2
    length = n_frames * hop_length
    full_window = padded_window(window, n_fft).to(magnitude.dtype)
    inverse_envelope = 1.0 / _envelope(full_window, hop_length, n_frames)  # (T * hop,)
    shrink = momentum / (1 + momentum)
    magnitude_t = magnitude.transpose(1, 2).contiguous()  # (B, T, n_bins)
    # (B, T, n_bins); always a copy (contiguous() may return a view), since the loop works in place
    spectrum = angles.transpose(1, 2).clone(memory_format=torch.contiguous_format)
    if n_iter == 0:
        return _unit_modulus_(spectrum, floor).transpose(1, 2)
    previous = None
    for _ in range(n_iter):
        # magnitude * unit(spectrum), in one pass over the complex spectrum
        scale = _squared_modulus(spectrum).clamp_(min=floor * floor).rsqrt_().mul_(magnitude_t)
        frames = torch.fft.irfft(spectrum.mul_(scale), n=n_fft, dim=-1).mul_(full_window)  # (B, T, n_fft)
        signal = _overlap_add_rows(frames, hop_length)[:, pad : pad + length].mul_(inverse_envelope)  # (B, T * hop)
        # (B, T * hop + 2 * pad) -> (B, T, n_fft): frame t starts at t * hop, as in stft()
        windowed = _pad_to_grid(signal, n_fft, hop_length).unfold(-1, n_fft, hop_length) * full_window
        rebuilt = torch.fft.rfft(windowed, dim=-1)  # (B, T, n_bins)
        # Momentum extrapolates along the last update: angles = rebuilt - a/(1+a) * previous.
        spectrum = rebuilt.clone() if previous is None else torch.sub(rebuilt, previous, alpha=shrink)
        previous = rebuilt
    return _unit_modulus_(spectrum, floor).transpose(1, 2)


def _overlap_add_rows(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """:func:`overlap_add` for frames as rows: ``(B, T, n_fft)`` -> ``(B, (T - 1) * hop + n_fft)``."""
    batch, n_frames, n_fft = frames.shape
    if n_fft % hop_length:
        return overlap_add(frames.transpose(1, 2), hop_length)
    pieces = n_fft // hop_length
    runs = frames.view(batch, n_frames, pieces, hop_length)  # piece k of frame t: samples (t + k) * hop onwards
    span = n_frames * hop_length
    signal = frames.new_empty(batch, (n_frames - 1) * hop_length + n_fft)
    signal[:, span:].zero_()
    # Each run is added through a (B, T, hop) view of its span of the signal, so the strided piece is
    # never copied out of the frames first; the first run initialises the span (0 + x is exactly x).
    signal[:, :span].view(batch, n_frames, hop_length).copy_(runs[:, :, 0])
    for k in range(1, pieces):
        signal[:, k * hop_length : k * hop_length + span].view(batch, n_frames, hop_length).add_(runs[:, :, k])
    return signal
