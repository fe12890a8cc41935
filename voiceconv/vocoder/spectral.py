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


def stft(audio: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT on the mel grid: ``(B, L)`` -> ``(B, n_fft // 2 + 1, L // hop)``."""
    pad = (n_fft - hop_length) // 2
    # Reflection needs more samples than the pad; a one- or two-frame signal is zero-padded instead.
    mode = "reflect" if audio.shape[-1] > pad else "constant"
    # padding needs a channel axis: (B, 1, L) -> pad -> (B, L + 2 * pad)
    padded = F.pad(audio.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)
    return torch.stft(padded, n_fft=n_fft, hop_length=hop_length, win_length=window.shape[0],
                      window=window, center=False, return_complex=True)


def istft(spec: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`stft`: ``(B, n_fft // 2 + 1, T)`` complex -> ``(B, T * hop)`` real.

    Least-squares overlap-add (Griffin and Lim 1984): each frame is windowed again and the sum is
    divided by the summed squared window, so an unmodified STFT comes back to the signal exactly.
    """
    n_frames = spec.shape[-1]
    pad = (n_fft - hop_length) // 2
    full_window = padded_window(window, n_fft).to(spec.real.dtype)
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * full_window[None, :, None]  # (B, n_fft, T)
    length = (n_frames - 1) * hop_length + n_fft
    # fold treats the n_fft axis as one (1 x n_fft) patch per frame and sums overlapping patches.
    signal = F.fold(frames, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop_length))
    signal = signal[:, 0, 0, pad : pad + n_frames * hop_length]  # (B, 1, 1, length) -> (B, T * hop)
    # The envelope is the same overlap-add applied to the squared window; a transposed convolution
    # of a row of ones computes it without materialising (n_fft, T) copies of the window.
    ones = torch.ones(1, 1, n_frames, dtype=full_window.dtype, device=full_window.device)
    envelope = F.conv_transpose1d(ones, full_window.square().view(1, 1, n_fft), stride=hop_length)
    envelope = envelope[0, 0, pad : pad + n_frames * hop_length]  # (1, 1, length) -> (T * hop,)
    # Only a window with zeros inside the trimmed range (hop == n_fft with Hann) gets near zero here.
    return signal / envelope.clamp(min=1e-11)


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
    angles = angles / angles.abs().clamp(min=floor)
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(magnitude * angles, n_fft, hop_length, window), n_fft, hop_length, window)
        # Momentum extrapolates along the last update: angles = rebuilt - a/(1+a) * previous.
        angles = rebuilt - previous * (momentum / (1 + momentum))
        angles = angles / angles.abs().clamp(min=floor)
        previous = rebuilt
    return angles
