"""Objective resynthesis quality: how far a vocoder's output is from the recording it should reproduce.

Both metrics compare a reference waveform with a vocoder's output for the reference's own mel
(lower is better, 0 for identical signals); they do not need a neural judge:

- :func:`log_mel_l1`: mean absolute log-mel difference with the project's mel front end, the same
  quantity as HiFi-GAN's validation "mel error";
- :func:`multi_resolution_stft_distance`: spectral convergence + log-magnitude L1 averaged over
  three STFT resolutions (Parallel WaveGAN's loss), sensitive to the phase-coherence and
  high-band errors that the mel smooths over (Griffin-Lim's "phasiness" shows up here).
"""

from __future__ import annotations

import numpy as np
import torch

from voiceconv.features import MelConfig, MelSpectrogram
from voiceconv.vocoder.losses import DEFAULT_STFT_RESOLUTIONS, MultiResolutionSTFTLoss


def _as_batch(audio) -> torch.Tensor:
    """``(L,)`` or ``(B, L)`` array/tensor -> float32 ``(B, L)`` CPU tensor."""
    tensor = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio)
    tensor = tensor.detach().float().cpu()
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


def _aligned(ref, out) -> tuple[torch.Tensor, torch.Tensor]:
    ref, out = _as_batch(ref), _as_batch(out)
    if ref.shape[0] != out.shape[0]:
        raise ValueError(f"batch sizes differ: reference {ref.shape[0]} vs output {out.shape[0]}")
    length = min(ref.shape[-1], out.shape[-1])  # vocoders may differ by a partial frame
    return ref[:, :length], out[:, :length]


@torch.no_grad()
def log_mel_l1(ref_audio, out_audio, mel_config: MelConfig | None = None) -> float:
    """Mean ``|log-mel(ref) - log-mel(out)|`` (natural-log units) over bins, frames and batch."""
    ref, out = _aligned(ref_audio, out_audio)
    mel = MelSpectrogram(mel_config or MelConfig())
    return float((mel(ref) - mel(out)).abs().mean())


@torch.no_grad()
def multi_resolution_stft_distance(ref, out, resolutions=DEFAULT_STFT_RESOLUTIONS) -> float:
    """Spectral convergence + log-magnitude L1, averaged over ``resolutions`` ``(n_fft, hop, win)``."""
    ref, out = _aligned(ref, out)
    return float(MultiResolutionSTFTLoss(resolutions)(out, ref))
