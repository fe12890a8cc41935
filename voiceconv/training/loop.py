"""Pieces shared by the training loops (VC model and vocoder): devices, DDP, logging, NaN guard, run dirs.

Nothing here knows about a particular model. A trainer builds its ``State``, calls
:func:`setup_distributed` once, logs through :class:`RunLogger` (TensorBoard when installed, always
a ``metrics.jsonl``), guards each step with :class:`NanGuard` and lays out its run directory with
:class:`RunDirectory`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voiceconv.errors import VoiceconvError

logger = logging.getLogger(__name__)


class TrainingError(VoiceconvError):
    """Training cannot go on (diverged, nothing to resume, run directory in use); the message says what to do."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU; an explicit CUDA request without CUDA is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {device} requested but CUDA is not available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def linear_ramp(step: int, warmup_steps: int) -> float:
    """0 -> 1 linearly over ``warmup_steps`` steps, then 1 (``warmup_steps <= 0``: always 1)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


# --------------------------------------------------------------------------------------------- DDP


@dataclass
class Distributed:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | torch.device | None = None) -> Distributed:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA).

    Under torchrun each process gets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from the environment;
    on CUDA process ``LOCAL_RANK`` uses GPU ``LOCAL_RANK``. Without torchrun this returns rank 0 of 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if world_size <= 1:
        return Distributed(0, 1, 0, resolved)
    import torch.distributed as dist

    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    logger.info("distributed: rank %d of %d on %s", rank, world_size, resolved)
    return Distributed(rank, world_size, local_rank, resolved)


def cleanup_distributed(ctx: Distributed) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def any_rank(flag: bool, ctx: Distributed) -> bool:
    """True when ``flag`` is true on any rank (every rank must call this at the same point)."""
    if not ctx.enabled:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather_objects(obj, ctx: Distributed) -> list:
    """Every rank's ``obj`` as a list indexed by rank (every rank must call this)."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# ------------------------------------------------------------------------------------------ NaN guard


class NanGuard:
    """Count consecutive non-finite steps; raise :class:`TrainingError` after ``max_bad_steps`` in a row.

    One bad batch (a silent segment, an fp16 overflow) should cost a step, not the run; a model that
    has diverged should stop with a clear message instead of burning compute on NaNs.
    """

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.consecutive = 0
        self.total = 0

    def check(self, finite: bool, step: int, detail: str = "") -> bool:
        """Record one step; returns True when the update should be applied."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.total += 1
        logger.warning("step %d: non-finite loss or gradient %s; skipping the update (%d in a row)",
                       step, detail, self.consecutive)
        if self.consecutive >= self.max_bad_steps:
            raise TrainingError(
                f"training diverged: {self.consecutive} consecutive steps with non-finite loss or gradients "
                f"(last at step {step}{', ' + detail if detail else ''}). Resume from the last checkpoint with a "
                "lower learning rate (train.lr=...), a smaller gradient clip (train.grad_clip=...), or bf16 off "
                "(train.bf16=false)"
            )
        return False


# ------------------------------------------------------------------------------------------- run dir


class RunDirectory:
    """Layout of a run directory::

        config.yaml                 the resolved config of the run
        train_state.pt              everything needed to resume (written atomically)
        metrics.jsonl               one JSON line per logged step
        tb/                         TensorBoard event files
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


# ------------------------------------------------------------------------------ shared run set-up


def bf16_autocast(enabled: bool, device: torch.device, cpu: bool = False):
    """bf16 autocast on CUDA when ``enabled``, and on the CPU when ``cpu``; otherwise a no-op context.

    On the CPU it pays only where the CPU has bf16 instructions (AVX-512 BF16, AMX): a VC training
    step ran 1.9x faster there; elsewhere it can be slower, hence its own switch.
    """
    import contextlib

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def experiment_from_args(experiment_class, config_path: str | None, overrides: list[str], run_dir: str | Path,
                         resume: bool, example_config: str):
    """The CLI's config: ``--config`` plus overrides, or on ``--resume`` the run's own ``config.yaml``.

    ``experiment_class`` is the dataclass with ``model`` and ``train`` sections; ``example_config``
    names a packaged config for the error message.
    """
    import yaml

    from voiceconv.config import apply_overrides, from_dict, load_yaml
    from voiceconv.errors import ConfigError

    run = RunDirectory(run_dir)
    if config_path is None:
        if not resume:
            raise ConfigError(f"--config is required for a new run (e.g. --config {example_config})")
        if not run.config.is_file():
            raise TrainingError(f"{run.root}: no config.yaml to resume from; pass --config")
        data = yaml.safe_load(run.config.read_text())
    else:
        data = load_yaml(config_path)
    return from_dict(experiment_class, apply_overrides(data, overrides))


def check_resume_config(run: RunDirectory, experiment) -> None:
    """Refuse to resume with a different model section; log which train settings changed."""
    import yaml

    from voiceconv.config import from_dict, to_dict
    from voiceconv.errors import ConfigError

    saved = yaml.safe_load(run.config.read_text()) if run.config.is_file() else None
    if saved is None:
        return
    # Normalised through the dataclass, so that a run saved before a model option existed (its
    # default then fills in) still resumes.
    try:
        saved_model = to_dict(from_dict(type(experiment.model), saved.get("model") or {}))
    except ConfigError:
        saved_model = saved.get("model")
    if saved_model != to_dict(experiment.model):
        raise ConfigError(f"{run.config}: the model section differs from the run being resumed, so the saved "
                          "weights do not fit; resume without --config (the run's own config.yaml is used) or "
                          "start a new run with another --out")
    changed = {k for k, v in to_dict(experiment.train).items() if saved.get("train", {}).get(k) != v}
    if changed:
        logger.info("resuming with changed train settings: %s", ", ".join(sorted(changed)))


def save_checkpoint(run: RunDirectory, ctx: Distributed, pretrained, step: int, best_val: float, guard: NanGuard,
                    experiment, periodic: bool, keep_checkpoints: int, trainer_state) -> None:
    """``last/`` (and ``checkpoints/step_X/``) plus ``train_state.pt``; collective: every rank calls it.

    ``pretrained`` is the unwrapped model with ``save_pretrained``; ``trainer_state`` is a callable
    returning the trainer's own entries (weights, optimizers), called on the main rank only. The
    loop's progress (what :func:`restore_progress` reads back), the experiment config and every
    rank's RNG state are added here.
    """
    from voiceconv.checkpoint import rng_state, save_train_state
    from voiceconv.config import to_dict

    rngs = gather_objects(rng_state(), ctx)
    if ctx.is_main:
        pretrained.save_pretrained(run.last)
        if periodic:
            pretrained.save_pretrained(run.checkpoint(step))
            run.prune(keep_checkpoints)
        # The weights go into the train state too: one atomically written file is a consistent
        # snapshot even when the process dies half-way through writing last/.
        save_train_state(run.train_state, {
            **trainer_state(),
            "step": step,
            "best_val": best_val,
            "bad_steps_total": guard.total,
            "config": to_dict(experiment),
            "rng": rngs,
            "world_size": ctx.world_size,
        })
    barrier(ctx)


def restore_progress(saved: dict, ctx: Distributed, guard: NanGuard, seed: int, source) -> tuple[int, float]:
    """The loop's step and best validation score from a loaded train state; restores this rank's RNG.

    With a different number of processes than the run saved, the data order (a function of the
    step) stays exact but the RNG streams cannot, so they are reseeded from the step.
    """
    from voiceconv.checkpoint import set_rng_state

    step, best_val = int(saved["step"]), float(saved["best_val"])
    guard.total = int(saved.get("bad_steps_total", 0))
    rngs = saved["rng"]
    if len(rngs) == ctx.world_size:
        set_rng_state(rngs[ctx.rank])
    else:
        logger.warning("resuming with %d processes instead of %d: the data order stays exact, the RNG "
                       "state does not", ctx.world_size, len(rngs))
        seed_everything(seed * 1000 + ctx.rank + step)
    logger.info("resumed from %s at step %d", source, step)
    return step, best_val
