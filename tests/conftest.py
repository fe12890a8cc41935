"""Shared fixtures. Helpers that build audio live in tests/helpers.py so test files can import them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # makes `from helpers import ...` work from any rootdir


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state, so failures reproduce."""
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def voice():
    """A 1 s synthetic voice at 22.05 kHz, ``(22050,)`` float32."""
    from helpers import synthetic_voice

    return synthetic_voice()


@pytest.fixture
def corpus_manifest(tmp_path):
    """Two synthetic speakers, three WAVs each, and their manifest (path relative to it)."""
    from helpers import write_corpus

    return write_corpus(tmp_path / "corpus")
