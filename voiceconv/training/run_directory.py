"""A training run on disk: the directory layout (:class:`RunDirectory`) and the logs written into it
(:class:`RunLogger`: ``metrics.jsonl`` always, TensorBoard when installed)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from voiceconv.errors import TrainingError

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- run dir


class RunDirectory:
    """Layout of a run directory::

        config.yaml                 the resolved config of the run
        train_state.pt              everything needed to resume (written atomically)
        metrics.jsonl               one JSON line per logged step
        tb/                         TensorBoard event files
        vc_mels.npy (.json)         a vocoder fine-tune's input mels, reconstructed by a VC model
        last/  best/                released-format model directories
        checkpoints/step_0001000/   periodic model directories (only the newest K are kept)
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def train_state(self) -> Path:
        return self.root / "train_state.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def vc_mels(self) -> Path:
        return self.root / "vc_mels.npy"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def last(self) -> Path:
        return self.root / "last"

    @property
    def best(self) -> Path:
        return self.root / "best"

    def checkpoint(self, step: int) -> Path:
        return self.root / "checkpoints" / f"step_{step:07d}"

    def checkpoints(self) -> list[Path]:
        """Periodic checkpoint directories, oldest first."""
        folder = self.root / "checkpoints"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_"))

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` periodic checkpoints (``keep <= 0`` keeps all)."""
        if keep <= 0:
            return
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def check_start(self, resume: bool) -> None:
        """Refuse to overwrite a run by accident, and to resume a run that is not there."""
        if resume and not self.train_state.is_file():
            raise TrainingError(f"{self.root}: no {self.train_state.name} to resume from; drop --resume to start "
                                "a new run")
        if not resume and self.train_state.is_file():
            raise TrainingError(f"{self.root} already holds a training run; pass --resume to continue it or "
                                "choose another --out")


# -------------------------------------------------------------------------------------------- logger


def _colorize(image: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (3, H, W) viridis, or (1, H, W) grey when matplotlib is missing."""
    try:
        from matplotlib import colormaps

        return np.transpose(colormaps["viridis"](image)[..., :3], (2, 0, 1)).astype(np.float32)  # (3, H, W)
    except ImportError:
        return image[None].astype(np.float32)


def mel_image(mel: torch.Tensor, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Log-mel ``(n_mels, T)`` -> ``(C, n_mels, T)`` image, low frequencies at the bottom."""
    mel = mel.detach().float().cpu().numpy()
    vmin = float(mel.min()) if vmin is None else vmin
    vmax = float(mel.max()) if vmax is None else vmax
    scaled = np.clip((mel - vmin) / max(vmax - vmin, 1e-6), 0.0, 1.0)
    return _colorize(scaled[::-1].copy())  # flip rows: mel bin 0 (lowest) drawn at the bottom


class RunLogger:
    """Scalars to ``metrics.jsonl`` and TensorBoard; images and audio to TensorBoard only.

    TensorBoard is optional: without it a warning is logged once and only the JSON lines are
    written. Only the main rank should create an enabled logger.
    """

    def __init__(self, run_dir: RunDirectory, enabled: bool = True, start_step: int = 0):
        self.run = run_dir
        self.enabled = enabled
        self.writer = None
        self.metrics_path = run_dir.metrics
        if not enabled:
            return
        run_dir.root.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed; logging scalars to %s only (pip install tensorboard)",
                           self.metrics_path)
        else:
            # purge_step drops events a crashed run wrote after its last checkpoint.
            self.writer = SummaryWriter(str(run_dir.tensorboard), purge_step=start_step or None)

    def _truncate_after(self, step: int) -> None:
        """On resume, forget lines logged after the checkpoint (the resumed run replays those steps)."""
        if not self.metrics_path.is_file():
            return
        lines = self.metrics_path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def mel(self, tag: str, mel: torch.Tensor, step: int, vmin: float | None = None,
            vmax: float | None = None) -> None:
        """Log-mel ``(n_mels, T)`` as an image."""
        if self.writer is not None:
            self.writer.add_image(tag, mel_image(mel, vmin, vmax), step)

    def audio(self, tag: str, audio: torch.Tensor, step: int, sample_rate: int) -> None:
        """Waveform ``(T,)`` in [-1, 1]."""
        if self.writer is not None:
            self.writer.add_audio(tag, audio.detach().float().cpu().clamp(-1, 1).reshape(1, -1), step,
                                  sample_rate=sample_rate)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(path: str | Path) -> list[dict]:
    """The lines of a ``metrics.jsonl`` as dicts (for tests, plots and reports)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
