"""Where the shipped default models live inside the installed package.

``vc/`` holds the default voice conversion model and ``vocoder/`` the default neural vocoder, each
as ``model.safetensors`` + ``config.json`` (see :mod:`voiceconv.checkpoint`). The functions only
return paths; whether the weights are there is checked by the loaders, which raise a
:class:`~voiceconv.errors.CheckpointError` that says what to do.
"""

from __future__ import annotations

from pathlib import Path


def default_vc_dir() -> Path:
    """Directory of the shipped voice conversion model."""
    return Path(__file__).parent / "vc"


def default_vocoder_dir() -> Path:
    """Directory of the shipped neural vocoder."""
    return Path(__file__).parent / "vocoder"
