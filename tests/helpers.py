"""Synthetic test audio shared by the test files: no downloads, deterministic, fast.

``synthetic_voice`` makes a crude but speaker-like signal: a glottal pulse train at ``f0`` (with slow
vibrato so it is not a pure tone) shaped by resonances at ``formants``, under a syllable-rate
envelope. Two voices with different ``f0``/``formants`` differ the way two speakers do (pitch and
spectral envelope), which is what voice-conversion tests need to measure.

``trainer_state`` and ``batch_of`` build a VC trainer state on the packaged debug config and a
training batch, for tests of one training step; ``debug_vc_model`` is that config's model alone, seeded,
for tests of the recipe's weight surgery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.signal import lfilter

from voiceconv.training.prepare import ManifestRow, write_manifest


def synthetic_voice(
    f0: float = 120.0,
    formants: tuple[float, ...] = (700.0, 1200.0, 2600.0),
    seconds: float = 1.0,
    sr: int = 22050,
    seed: int = 0,
    peak: float = 0.5,
) -> np.ndarray:
    """A voiced "utterance", ``(round(seconds * sr),)`` float32 peaking at ``peak``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    # 5 Hz vibrato of +-3 % plus a random phase keeps different seeds from being identical.
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t + rng.uniform(0, 2 * np.pi)))
    phase = np.cumsum(pitch) / sr
    source = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)  # one impulse per period
    source += 0.01 * rng.standard_normal(n)  # breath noise
    signal = source
    for k, formant in enumerate(formants):
        # Two-pole resonator: bandwidth 80 Hz + 5 % of the centre frequency.
        bandwidth = 80 + 0.05 * formant
        r = np.exp(-np.pi * bandwidth / sr)
        theta = 2 * np.pi * formant / sr
        shaped = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], source)
        signal = shaped if k == 0 else signal + shaped
    # Syllables: a 4 Hz raised-cosine envelope that never quite reaches zero.
    envelope = 0.55 - 0.45 * np.cos(2 * np.pi * 4 * t + rng.uniform(0, 2 * np.pi))
    signal = signal * envelope
    signal = signal / (np.abs(signal).max() + 1e-12) * peak
    return signal.astype(np.float32)


def write_corpus(
    directory: Path,
    speakers: dict[str, tuple[float, tuple[float, ...]]] | None = None,
    per_speaker: int = 3,
    seconds: float = 0.6,
    sr: int = 22050,
) -> Path:
    """WAV files for each speaker ``{name: (f0, formants)}`` plus ``manifest.csv``; returns the manifest."""
    import soundfile as sf

    speakers = speakers or {"low": (100.0, (600.0, 1100.0, 2500.0)), "high": (220.0, (900.0, 1700.0, 3000.0))}
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, (name, (f0, formants)) in enumerate(speakers.items()):
        for i in range(per_speaker):
            path = directory / name / f"{name}_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            # Lengths vary by utterance so that offsets in the prepared cache are not all alike.
            audio = synthetic_voice(f0, formants, seconds * (1 + 0.25 * i), sr, seed=100 * s + i)
            sf.write(path, audio, sr, subtype="PCM_16")
            rows.append(ManifestRow(str(path.relative_to(directory)), name, f"{name} utterance {i}"))
    manifest = directory / "manifest.csv"
    write_manifest(manifest, rows)
    return manifest


def trainer_state(*overrides: str):
    """A VC trainer ``State`` on the packaged debug config with ``overrides`` (dotted keys)."""
    import voiceconv
    from voiceconv.models.vc_model import VCModel
    from voiceconv.training.distributed import Distributed
    from voiceconv.training.loop import NanGuard
    from voiceconv.training.vc_trainer import State, load_experiment

    experiment = load_experiment(Path(voiceconv.__file__).parent / "conf" / "debug.yaml", list(overrides))
    model = VCModel(experiment.model)
    return State(model, torch.optim.Adam(model.parameters()), experiment.train, Distributed(), NanGuard(5))


def debug_vc_model(seed: int = 0):
    """The packaged debug architecture (``debug.yaml`` over its base), seeded, in eval mode."""
    import voiceconv
    from voiceconv.config import from_dict, load_yaml
    from voiceconv.models import VCConfig, VCModel

    torch.manual_seed(seed)
    model = load_yaml(Path(voiceconv.__file__).parent / "conf" / "debug.yaml")["model"]
    return VCModel(from_dict(VCConfig, model)).eval()


def batch_of(mel: torch.Tensor) -> dict[str, torch.Tensor]:
    """A training batch of ``mel (B, n_mels, T)`` with no padding and one speaker."""
    return {"mel": mel, "mask": torch.ones(mel.shape[0], mel.shape[-1]),
            "speaker": torch.zeros(mel.shape[0], dtype=torch.long)}
