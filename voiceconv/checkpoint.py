"""Self-describing model directories and separate, atomically written training state.

A model directory holds:

- ``model.safetensors``: the weights (no pickle, safe to load from anyone);
- ``config.json``: ``{"format_version", "kind", "config", "sha256", "voiceconv_version"}``, where
  ``config`` is the full constructor config including the mel config.

Training state (optimizer, step, RNG states) lives in ``train_state.pt`` beside it, written to a
temporary name then renamed, and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from voiceconv.atomic import atomic_path
from voiceconv.errors import CheckpointError

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# The keys save_pretrained writes itself; ``extra`` metadata may not use them.
RESERVED_KEYS = frozenset({"format_version", "kind", "voiceconv_version", "sha256", "config"})
TRAIN_STATE_NAME = "train_state.pt"


def sha256_file(path: str | Path, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block_size):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, writer) -> None:
    """Call ``writer(temp_path)`` then rename over ``path``, so readers never see half a file."""
    with atomic_path(path) as temp:
        writer(str(temp))


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write_bytes(Path(path), lambda temp: Path(temp).write_text(text))


def save_pretrained(
    directory: str | Path, kind: str, config: dict, state_dict: dict, extra: dict | None = None
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``.

    ``config`` is the full constructor config (JSON-serialisable); ``extra`` adds top-level keys
    to ``config.json`` (e.g. training provenance) but may not replace the reserved ones.
    """
    clash = sorted(set(extra or {}) & RESERVED_KEYS)
    if clash:  # checked before anything is written, so a bad call leaves no half-saved model
        raise ValueError(f"extra metadata may not replace the reserved keys {clash}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; clone makes every tensor its own.
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state_dict.items()}
    weights = directory / WEIGHTS_NAME
    _atomic_write_bytes(weights, lambda temp: save_file(tensors, temp, metadata={"kind": kind}))
    from voiceconv import __version__

    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "voiceconv_version": __version__,
        "sha256": sha256_file(weights),
        "config": config,
    }
    meta.update(extra or {})
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    return directory


def extra_metadata(meta: dict) -> dict:
    """The keys of a ``config.json`` dict that ``save_pretrained`` did not write itself (provenance and
    the like), to carry over when a model is re-saved."""
    return {key: value for key, value in meta.items() if key not in RESERVED_KEYS}


def read_config(directory: str | Path, kind: str | None = None) -> dict:
    """Read and validate ``config.json``; returns the whole metadata dict."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found")
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME}; is this a voiceconv model directory?")
    try:
        meta = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path}: not valid JSON ({error})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: checkpoint format version {version!r}, but this voiceconv reads version "
            f"{FORMAT_VERSION}; upgrade voiceconv or re-export the model"
        )
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{directory}: holds a {meta.get('kind')!r} model, expected a {kind!r} model")
    return meta


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory, given either the directory itself or a training run (its ``best/``, else ``last/``)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    for name in ("best", "last"):
        if (path / name / CONFIG_NAME).is_file():
            return path / name
    raise CheckpointError(f"{path}: neither a model directory ({CONFIG_NAME}) nor a training run with best/ or "
                          "last/; pass a released model or the directory a 'voiceconv train' run wrote")


def load_pretrained(directory: str | Path, kind: str | None = None, verify: bool = True) -> tuple[dict, dict]:
    """Return ``(meta, state_dict)`` after checking version, kind and the weights' sha256."""
    directory = Path(directory)
    meta = read_config(directory, kind)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS_NAME} is missing")
    if verify:
        actual = sha256_file(weights)
        if actual != meta.get("sha256"):
            raise CheckpointError(
                f"{weights}: sha256 {actual[:12]}... does not match config.json ({str(meta.get('sha256'))[:12]}...); "
                "the weights are corrupt or were modified. Re-download or re-export the model"
            )
    try:
        state_dict = load_file(str(weights))
    except Exception as error:
        raise CheckpointError(f"{weights}: cannot read weights ({error})") from None
    return meta, state_dict


def save_train_state(path: str | Path, state: dict) -> None:
    """Atomically write training state (tensors, numbers, strings, nested dicts/lists only)."""
    _atomic_write_bytes(Path(path), lambda temp: torch.save(state, temp))


def load_train_state(path: str | Path) -> dict:
    """Read training state with ``weights_only=True``: no arbitrary code can run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found; nothing to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot read training state ({error})") from None


def rng_state() -> dict:
    """Every global RNG that training touches, as tensors and numbers that ``weights_only`` loading accepts.

    Each generator's cached Gaussian is kept too (Python's ``random.gauss`` and NumPy's legacy
    ``normal`` draw values in pairs), otherwise the first normal draw after a resume would differ.
    """
    import random

    import numpy as np

    version, internal, gauss_next = random.getstate()
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor([version, *internal], dtype=torch.int64),  # MT words < 2**32 fit int64
        "python_gauss": None if gauss_next is None else float(gauss_next),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(position),
        "numpy_gauss": (int(has_gauss), float(cached_gaussian)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured (states saved before the Gaussian caches were kept load too)."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    values = state["python"].tolist()
    if "python_gauss" in state:
        random.setstate((values[0], tuple(values[1:]), state["python_gauss"]))
    else:  # older layout: [version, *internal, gauss flag]
        random.setstate((values[0], tuple(values[1:-1]), None))
    has_gauss, cached_gaussian = state.get("numpy_gauss", (0, 0.0))
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), int(has_gauss), float(cached_gaussian)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
