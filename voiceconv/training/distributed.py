"""Where a training process runs: the device, seeds, and the DDP process group (torchrun) with its
collectives. A single process is a world of one, so trainers never branch on it."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from voiceconv.errors import TrainingError

logger = logging.getLogger(__name__)


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
