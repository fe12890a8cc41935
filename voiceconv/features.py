"""The one mel front end shared by every model in voiceconv.

The default is the mel of the public HiFi-GAN checkpoints (jik876 LJ/VCTK/UNIVERSAL_V1) and of
NVIDIA BigVGAN's 22 kHz/80-band models, so that their weights interoperate with ours:

    22.05 kHz, n_fft 1024, hop 256, win 1024 (Hann), 80 Slaney mels over 0-8000 Hz,
    reflect-pad (n_fft - hop) / 2 on both sides then STFT with center=False,
    magnitude sqrt(re^2 + im^2 + 1e-9), natural log clamped at 1e-5.

With that padding a signal of ``L`` samples gives exactly ``L // hop_length`` frames.

The config travels inside every checkpoint; :meth:`MelConfig.check_compatible` is what refuses to
combine a VC model and a vocoder that analyse audio differently.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from voiceconv.errors import ConfigError, VoiceconvError


class MelMismatchError(VoiceconvError):
    """Two components were built for different mel front ends (a ``ValueError``, so the CLI prints one line)."""


@dataclass
class MelConfig:
    sample_rate: int = 22050  # HiFi-GAN / BigVGAN 22 kHz models
    n_fft: int = 1024  # HiFi-GAN n_fft
    hop_length: int = 256  # HiFi-GAN hop_size: 11.6 ms per frame at 22.05 kHz
    win_length: int = 1024  # HiFi-GAN win_size (Hann window)
    n_mels: int = 80  # HiFi-GAN num_mels
    fmin: float = 0.0  # HiFi-GAN fmin
    fmax: float | None = 8000.0  # HiFi-GAN fmax; None means sample_rate / 2
    log_clamp: float = 1e-5  # HiFi-GAN dynamic_range_compression clip_val

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(f"mel config: {name} must be a positive integer, got {value!r}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"mel config: win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if self.hop_length > self.win_length:
            raise ConfigError(
                f"mel config: hop_length ({self.hop_length}) above win_length ({self.win_length}) would skip samples"
            )
        if (self.n_fft - self.hop_length) % 2:
            raise ConfigError("mel config: n_fft - hop_length must be even for the symmetric HiFi-GAN padding")
        nyquist = self.sample_rate / 2
        top = nyquist if self.fmax is None else self.fmax
        if top > nyquist:
            raise ConfigError(f"mel config: fmax {self.fmax} is above Nyquist ({nyquist}); lower it or use None")
        if not 0 <= self.fmin < top:
            raise ConfigError(f"mel config: need 0 <= fmin < fmax, got fmin={self.fmin}, fmax={top}")
        if not self.log_clamp > 0:
            raise ConfigError(f"mel config: log_clamp must be positive, got {self.log_clamp}")

    @property
    def padding(self) -> int:
        """Reflect padding on each side, (n_fft - hop) / 2, so that frames == len // hop."""
        return (self.n_fft - self.hop_length) // 2

    @property
    def min_samples(self) -> int:
        """Shortest input with one frame: a full hop, and more samples than the reflect padding."""
        return max(self.hop_length, self.padding + 1)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def min_log(self) -> float:
        """The log-mel value of silence (log of the clamp)."""
        return float(np.log(self.log_clamp))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown mel config key(s) {', '.join(sorted(unknown))}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def check_compatible(self, other: MelConfig, this_name: str = "model", other_name: str = "vocoder") -> None:
        """Raise :class:`MelMismatchError` naming every field that differs."""
        diffs = [
            f"{f.name}: {this_name}={getattr(self, f.name)!r} vs {other_name}={getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
        if diffs:
            raise MelMismatchError(
                f"the {this_name} and the {other_name} use different mel front ends ({'; '.join(diffs)}). "
                f"Use a {other_name} trained on the same mel config, or retrain/fine-tune one."
            )


def mel_basis(config: MelConfig, dtype=np.float32) -> np.ndarray:
    """Slaney-normalised mel filterbank, ``(n_mels, n_fft // 2 + 1)``, exactly as HiFi-GAN builds it.

    ``librosa.filters.mel`` with its defaults (Slaney mel scale, ``norm="slaney"``). librosa is imported
    here rather than at module level because its import costs seconds that ``import voiceconv`` should
    not pay.
    """
    import librosa

    basis = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax,
        dtype=np.float64,
    )
    return basis.astype(dtype)


@functools.cache
def smooth_projection(n_mels: int, n_basis: int) -> torch.Tensor:
    """``(n_mels, n_mels)`` float32 projection of a log-mel frame onto its first ``n_basis`` orthonormal
    DCT-II cosines along the mel axis: the frame's smooth part (level, tilt, broad bumps such as formants
    or a channel's EQ curve). Symmetric and idempotent; applied as ``projection @ frame``."""
    bins = torch.arange(n_mels, dtype=torch.float64)
    index = torch.arange(n_basis, dtype=torch.float64)
    basis = torch.cos(torch.pi / n_mels * (bins[None, :] + 0.5) * index[:, None])  # (n_basis, n_mels)
    basis[0] /= 2.0**0.5
    basis *= (2.0 / n_mels) ** 0.5  # orthonormal rows
    return (basis.T @ basis).float()


class MelSpectrogram(nn.Module):
    """Waveform -> log-mel, batched, differentiable and device-agnostic.

    Input ``(T,)`` or ``(B, T)`` float audio in [-1, 1] at ``config.sample_rate``;
    output ``(n_mels, T // hop)`` or ``(B, n_mels, T // hop)``.
    """

    def __init__(self, config: MelConfig | None = None):
        super().__init__()
        self.config = config or MelConfig()
        # Buffers, not parameters: they follow .to(device) but are not trained or saved as weights.
        # Kept in float64 and cast to the input's dtype on use, so float64 input gets a float64 front end.
        basis = mel_basis(self.config, np.float64)  # (n_mels, n_fft // 2 + 1), Slaney
        self.register_buffer("mel_basis", torch.from_numpy(basis).double(), persistent=False)
        self.register_buffer(
            "window", torch.hann_window(self.config.win_length, dtype=torch.float64), persistent=False
        )

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude, (B, n_fft // 2 + 1, frames)."""
        c = self.config
        if audio.shape[-1] < c.min_samples:
            raise ValueError(
                f"audio of {audio.shape[-1]} samples is too short for one mel frame "
                f"(need at least {c.min_samples} samples at {c.sample_rate} Hz)"
            )
        # (B, 1, T) for the 1-D reflect pad, then back to (B, T + 2 * padding).
        padded = torch.nn.functional.pad(audio.unsqueeze(1), (c.padding, c.padding), mode="reflect").squeeze(1)
        spec = torch.stft(
            padded,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window.to(padded.dtype),
            center=False,
            return_complex=True,
        )
        # The 1e-9 inside the root keeps the gradient finite at exact zeros (HiFi-GAN does the same).
        return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)`` or ``(B, T)`` -> ``(n_mels, T // hop)`` or ``(B, n_mels, T // hop)``.

        Computed in float64 for float64 input and in float32 otherwise, autocast or not: the mel is
        a training target and the vocoder's input, and a bf16 filterbank product would shift it by
        ~0.01 in log units.
        """
        if audio.dim() not in (1, 2):
            raise ValueError(f"expected audio of shape (T,) or (B, T), got {tuple(audio.shape)}")
        unbatched = audio.dim() == 1
        if unbatched:
            audio = audio.unsqueeze(0)  # (1, T)
        if audio.dtype != torch.float64:
            audio = audio.float()
        with torch.autocast(device_type=audio.device.type, enabled=False):
            # (n_mels, F) @ (B, F, frames) -> (B, n_mels, frames); the basis follows the input's precision.
            mel = torch.matmul(self.mel_basis.to(audio.dtype), self.magnitude(audio))
            log_mel = torch.log(torch.clamp(mel, min=self.config.log_clamp))
        return log_mel[0] if unbatched else log_mel
