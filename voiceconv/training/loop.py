"""The training loop both trainers share (VC model and vocoder), and the pieces around it.

Nothing here knows about a particular model. A trainer builds its ``State`` (a :class:`TrainingState`),
opens its run with :func:`open_run`, and hands :func:`run_loop` its own step, validation and
checkpoint functions; the loop does the schedule, the averaged logs, best-model selection, the
periodic and final checkpoints and Ctrl-C. Steps are guarded with :class:`NanGuard`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from voiceconv.errors import ConfigError, TrainingError
from voiceconv.training.data import PreparedCorpus
from voiceconv.training.distributed import (
    Distributed,
    barrier,
    cleanup_distributed,
    gather_objects,
    seed_everything,
    setup_distributed,
    unwrap,
)
from voiceconv.training.run_directory import RunDirectory, RunLogger

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def weights_held(module: torch.nn.Module):
    """No weight gradients for ``module`` (a discriminator while its generator's terms are computed), and no
    DDP gradient sync; its ``requires_grad`` flags are restored afterwards."""
    sync = module.no_sync() if isinstance(module, torch.nn.parallel.DistributedDataParallel) else \
        contextlib.nullcontext()
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with sync:
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def linear_ramp(step: int, warmup_steps: int) -> float:
    """0 -> 1 linearly over ``warmup_steps`` steps, then 1 (``warmup_steps <= 0``: always 1)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def cosine_decay(base: float, step: int, total_steps: int, final_ratio: float) -> float:
    """Cosine decay from ``base`` to ``base * final_ratio`` over ``total_steps``, then flat.

    A pure function of the step, so a resumed run gets the same rate without extra state;
    ``final_ratio == 1`` is a constant rate.
    """
    progress = min(1.0, step / max(1, total_steps))
    return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


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


# ------------------------------------------------------------------------------ shared run set-up


def experiment_config(name: str, module: str, model_config: type, train_config: type) -> type:
    """The dataclass ``name`` of a whole run: a ``model`` section (the model's constructor config) and
    a ``train`` section, as in the experiment YAML files."""
    from voiceconv.config import load_config

    cls = dataclasses.make_dataclass(name, [
        ("model", model_config, dataclasses.field(default_factory=model_config)),
        ("train", train_config, dataclasses.field(default_factory=train_config)),
    ])
    cls.__module__ = module
    cls.__doc__ = (f"Everything a run needs: ``model`` ({model_config.__name__}) and ``train`` "
                   f"({train_config.__name__}). ``load(path, overrides)`` reads an experiment YAML (with "
                   "``base:`` overlays) plus ``key=value`` overrides.")
    cls.load = classmethod(load_config)
    return cls


def check_schedule(config) -> None:
    """The schedule checks every trainer's ``train`` config makes in ``__post_init__``."""
    if config.steps < 0 or config.batch_size < 1 or config.segment_frames < 1:
        raise ValueError("steps must be >= 0, batch_size and segment_frames >= 1")
    if min(config.log_every, config.val_every, config.checkpoint_every) < 1:
        raise ValueError("log_every, val_every and checkpoint_every must be >= 1")
    if config.max_bad_steps < 1:
        raise ValueError("max_bad_steps must be >= 1")
    if not 0.0 <= config.final_lr_ratio <= 1.0:
        raise ValueError(f"final_lr_ratio must be in [0, 1] (1: constant learning rate), got {config.final_lr_ratio}")


class TrainingState:
    """Base of each trainer's ``State`` dataclass, which has ``ctx``, ``config``, ``guard``, ``step`` and
    ``best_val``, and says what a checkpoint holds."""

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        """The networks whose weights the train state keeps, by name (DDP wrappers allowed)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers whose state the train state keeps, by name."""
        raise NotImplementedError

    def released(self):
        """The bare model written to ``last/``, ``best/`` and ``checkpoints/`` (has ``save_pretrained``)."""
        raise NotImplementedError


@contextlib.contextmanager
def process_group(device: str | torch.device | None, num_threads: int | None):
    """This process's :class:`Distributed` context for one run (torch threads set first), torn down after."""
    if num_threads:
        torch.set_num_threads(num_threads)
    ctx = setup_distributed(device)
    try:
        yield ctx
    finally:
        cleanup_distributed(ctx)


def open_run(run: RunDirectory, experiment, data_dir, resume: bool, ctx: Distributed, what: str) -> PreparedCorpus:
    """Check the run directory, the resumed config and the batch split; open the prepared corpus.

    ``what`` names the config in a mel-mismatch error (e.g. ``"model config"``).
    """
    config = experiment.train
    run.check_start(resume)
    if resume:
        check_resume_config(run, experiment)
    if config.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size={config.batch_size} is not divisible by the {ctx.world_size} "
                          "processes; choose a multiple")
    corpus = PreparedCorpus(data_dir)
    corpus.mel_config.check_compatible(experiment.model.mel, "prepared data", what)
    return corpus


def write_run_config(run: RunDirectory, experiment) -> None:
    """``config.yaml`` of the run (main rank): what ``--resume`` reads back."""
    import yaml

    from voiceconv.checkpoint import atomic_write_text
    from voiceconv.config import to_dict

    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, yaml.safe_dump(to_dict(experiment), sort_keys=False))


def bf16_autocast(enabled: bool, device: torch.device, cpu: bool = False):
    """bf16 autocast on CUDA when ``enabled``, and on the CPU when ``cpu``; otherwise a no-op context.

    On the CPU it pays only where the CPU has bf16 instructions (AVX-512 BF16, AMX): a VC training
    step ran 1.9x faster there; elsewhere it can be slower, hence its own switch.
    """
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


# ---------------------------------------------------------------------------------- checkpoints


def save_checkpoint(state: TrainingState, run: RunDirectory, experiment, periodic: bool) -> None:
    """``last/`` (and, when ``periodic``, ``checkpoints/step_X/``) plus ``train_state.pt``; collective:
    every rank calls it.

    The train state holds each of ``state.trained_modules()`` and ``state.optimizers()`` under its
    name, the loop's progress (what :func:`restore` reads back), the experiment config and every
    rank's RNG state.
    """
    from voiceconv.checkpoint import rng_state, save_train_state
    from voiceconv.config import to_dict

    ctx = state.ctx
    rngs = gather_objects(rng_state(), ctx)
    if ctx.is_main:
        released = state.released()
        released.save_pretrained(run.last)
        if periodic:
            released.save_pretrained(run.checkpoint(state.step))
            run.prune(state.config.keep_checkpoints)
        # The weights go into the train state too: one atomically written file is a consistent
        # snapshot even when the process dies half-way through writing last/.
        save_train_state(run.train_state, {
            **{name: {k: v.detach().cpu() for k, v in unwrap(module).state_dict().items()}
               for name, module in state.trained_modules().items()},
            **{name: optimizer.state_dict() for name, optimizer in state.optimizers().items()},
            "step": state.step,
            "best_val": state.best_val,
            "bad_steps_total": state.guard.total,
            "config": to_dict(experiment),
            "rng": rngs,
            "world_size": ctx.world_size,
        })
    barrier(ctx)


def restore(state: TrainingState, run: RunDirectory) -> None:
    """Load ``run``'s train state into ``state``: weights, optimizers, step, best score and this rank's RNG.

    With a different number of processes than the run saved, the data order (a function of the
    step) stays exact but the RNG streams cannot, so they are reseeded from the step.
    """
    from voiceconv.checkpoint import load_train_state, set_rng_state

    saved = load_train_state(run.train_state)
    missing = [name for name in (*state.trained_modules(), *state.optimizers()) if name not in saved]
    if missing:
        raise ConfigError(f"{run.train_state} has no {', '.join(missing)}: the run was started without the part "
                          "that trains it (for example train.mel_adversary); resume with the run's own config, "
                          "or start a new run from its weights with --init-from")
    for name, module in state.trained_modules().items():
        unwrap(module).load_state_dict(saved[name])
    for name, optimizer in state.optimizers().items():
        optimizer.load_state_dict(saved[name])
    ctx = state.ctx
    state.step, state.best_val = int(saved["step"]), float(saved["best_val"])
    state.guard.total = int(saved.get("bad_steps_total", 0))
    rngs = saved["rng"]
    if len(rngs) == ctx.world_size:
        set_rng_state(rngs[ctx.rank])
    else:
        logger.warning("resuming with %d processes instead of %d: the data order stays exact, the RNG "
                       "state does not", ctx.world_size, len(rngs))
        seed_everything(state.config.seed * 1000 + ctx.rank + state.step)
    logger.info("resumed from %s at step %d", run.train_state, state.step)


# ------------------------------------------------------------------------------------------- loop


def run_loop(state: TrainingState, log: RunLogger, experiment, *, batch: Callable[[int], dict],
             train_step: Callable[[TrainingState, dict], dict[str, float]],
             validate: Callable[[], dict[str, float]] | None, best_key: str, desc: str,
             progress: bool) -> dict[str, float]:
    """Step until ``state.config.steps``; returns the last logged scalars (and validation scores).

    Every ``log_every`` steps the step values averaged over the interval go to ``log`` (with
    ``steps_per_second``); every ``val_every`` steps ``validate()`` runs (main rank only; pass None
    elsewhere) and a lower ``best_key`` saves ``state.released()`` to ``best/``; every ``checkpoint_every`` steps and at
    the end :func:`save_checkpoint` runs on every rank. Ctrl-C in a single process saves a
    resume point first.
    """
    from tqdm import tqdm

    config, ctx = state.config, state.ctx
    bar = tqdm(total=config.steps, initial=state.step, disable=not (ctx.is_main and progress), unit="step",
               dynamic_ncols=True, desc=desc)
    window: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    if state.step >= config.steps and ctx.is_main:
        logger.warning("the run is already at step %d of train.steps=%d; nothing to do (pass e.g. "
                       "train.steps=%d to train longer)", state.step, config.steps, 2 * max(state.step, 1))
    timer = time.perf_counter()
    try:
        while state.step < config.steps:
            values = train_step(state, batch(state.step))
            bar.update(1)
            for key, value in values.items():
                window.setdefault(key, []).append(value)
            finished = state.step >= config.steps
            if state.step % config.log_every == 0 or finished:
                elapsed = time.perf_counter() - timer
                last = {k: float(np.mean(v)) for k, v in window.items()}
                last["steps_per_second"] = len(window["loss/total"]) / max(elapsed, 1e-9)
                log.scalars(last, state.step)
                bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in last.items() if k.startswith("loss/")})
                window, timer = {}, time.perf_counter()
            if validate is not None and (state.step % config.val_every == 0 or finished):
                # Validation must not consume the training RNG, or resuming would change the run.
                with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                    scores = validate()
                last.update(scores)
                if scores[best_key] < state.best_val:
                    state.best_val = scores[best_key]
                    state.released().save_pretrained(log.run.best)
            if state.step % config.checkpoint_every == 0 or finished:
                save_checkpoint(state, log.run, experiment, periodic=state.step % config.checkpoint_every == 0)
                log.flush()
    except KeyboardInterrupt:
        # Ctrl-C in a single process leaves a resume point; under torchrun the other ranks may be
        # mid-collective, so there the last periodic checkpoint is the resume point.
        if not ctx.enabled:
            logger.warning("interrupted at step %d; saving %s and %s (continue with --resume)", state.step,
                           log.run.last, log.run.train_state)
            save_checkpoint(state, log.run, experiment, periodic=False)
        raise
    finally:
        bar.close()
        log.close()
    return last
