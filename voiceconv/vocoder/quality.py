"""Objective resynthesis quality: how far a vocoder's output is from the recording it should reproduce.

Both metrics compare a reference waveform with a vocoder's output for the reference's own mel
(lower is better, 0 for identical signals); they do not need a neural judge:

- :func:`log_mel_l1`: mean absolute log-mel difference with the project's mel front end, the same
  quantity as HiFi-GAN's validation "mel error";
- :func:`multi_resolution_stft_distance`: spectral convergence + log-magnitude L1 averaged over
  three STFT resolutions (Parallel WaveGAN's loss), sensitive to the phase-coherence and
  high-band errors that the mel smooths over (Griffin-Lim's "phasiness" shows up here);
- :func:`frame_rate_modulation_db`: how strongly the output's power pulses at the frame rate
  (``sample_rate / hop``, 86 Hz by default), the "buzz" of a vocoder whose frames do not overlap-add
  coherently; a recording scores a few dB, a buzzing vocoder 20 dB or more;
- :func:`pesq_wideband`: wide-band PESQ (ITU-T P.862.2) at 16 kHz, higher is better, when the
  optional ``pesq`` package is installed (``pip install -e '.[eval]'``).
"""

from __future__ import annotations

import numpy as np
import soxr
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


PESQ_SAMPLE_RATE = 16_000  # wide-band PESQ is defined at 16 kHz


def pesq_wideband(ref_audio, out_audio, sample_rate: int) -> float:
    """Wide-band PESQ MOS-LQO (about 1.0 to 4.6, higher is better) of ``out_audio`` against ``ref_audio``.

    Both 1-D signals at ``sample_rate`` are resampled to 16 kHz first. Needs the ``pesq`` package
    (an offline C implementation of ITU-T P.862.2), part of the ``[eval]`` extra.
    """
    try:
        from pesq import pesq
    except ImportError as error:
        raise ImportError("PESQ needs the pesq package: pip install -e '.[eval]' (or pip install pesq)") from error
    ref, out = _aligned(ref_audio, out_audio)
    if ref.shape[0] != 1:
        raise ValueError(f"PESQ compares one pair of signals, got a batch of {ref.shape[0]}")
    ref16, out16 = (soxr.resample(x[0].numpy().astype(np.float64), sample_rate, PESQ_SAMPLE_RATE, quality="VHQ")
                    for x in (ref, out))
    return float(pesq(PESQ_SAMPLE_RATE, ref16, out16, "wb"))


@torch.no_grad()
def frame_rate_modulation_db(audio, sample_rate: int, hop_length: int) -> float:
    """Peak of the power envelope's spectrum at the frame rate, in dB over the 50-130 Hz median.

    The squared signal's spectrum (its power envelope, mean removed) is searched within 1 Hz of
    ``sample_rate / hop_length`` and compared with the median of the 50-130 Hz region around it
    (the frame rate's own +-3 Hz excluded). Speech has no special energy there, so a recording
    scores a few dB; a vocoder that pulses at its hop scores far more. 1-D input.
    """
    signal = _as_batch(audio)[0].double()
    power = signal.square()
    envelope = torch.fft.rfft(power - power.mean()).abs()
    frequencies = torch.fft.rfftfreq(power.shape[0], 1.0 / sample_rate)
    frame_rate = sample_rate / hop_length
    peak = envelope[(frequencies - frame_rate).abs() < 1.0]
    around = envelope[(frequencies > 50.0) & (frequencies < 130.0) & ((frequencies - frame_rate).abs() > 3.0)]
    if peak.numel() == 0 or around.numel() == 0:
        raise ValueError("the signal is too short to resolve its frame-rate modulation (needs about 1 s)")
    return float(20.0 * torch.log10(peak.max() / around.median().clamp(min=1e-30)))
