"""Import of jik876/hifi-gan checkpoints (``g_*`` generator files plus their ``config.json``).

Kept apart from :mod:`voiceconv.vocoder.hifigan` (the network) because it builds a whole
:class:`~voiceconv.vocoder.model.Vocoder`, which itself imports the network: one direction only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from voiceconv.errors import CheckpointError
from voiceconv.features import MelConfig
from voiceconv.vocoder.hifigan import HiFiGANConfig
from voiceconv.vocoder.model import Vocoder, VocoderConfig

# jik876 config.json key -> our MelConfig field
_MEL_KEYS = {"sampling_rate": "sample_rate", "n_fft": "n_fft", "hop_size": "hop_length", "win_size": "win_length",
             "num_mels": "n_mels", "fmin": "fmin", "fmax": "fmax"}
_GENERATOR_KEYS = ("resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                   "resblock_kernel_sizes", "resblock_dilation_sizes")


def read_jik876_config(path) -> tuple[HiFiGANConfig, MelConfig]:
    """Generator and mel config from a jik876 ``config.json``; :class:`CheckpointError` when keys are missing."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: HiFi-GAN config.json not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    missing = [k for k in (*_GENERATOR_KEYS, *_MEL_KEYS) if k not in data]
    if missing:
        raise CheckpointError(f"{path}: not a HiFi-GAN config (missing {', '.join(missing)}); pass the config.json "
                              "that was released with the checkpoint")
    try:
        generator = HiFiGANConfig(**{k: data[k] for k in _GENERATOR_KEYS})
        mel = MelConfig(**{ours: data[theirs] for theirs, ours in _MEL_KEYS.items()})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid HiFi-GAN config ({error})") from None
    return generator, mel


def import_jik876(checkpoint, config_json, out_dir, expected_mel: MelConfig | None = None):
    """Convert a jik876-style ``{'generator': state_dict}`` file into a voiceconv vocoder directory.

    The checkpoint is read with ``torch.load(weights_only=True)`` (no code runs), its mel settings
    must equal ``expected_mel`` (default: the project's default mel) or a ``MelMismatchError``
    says which differ, and the weights must fit the config. Returns the loaded :class:`Vocoder`.
    """
    generator_config, mel = read_jik876_config(config_json)
    (expected_mel or MelConfig()).check_compatible(mel, "voiceconv mel front end", "HiFi-GAN checkpoint")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint file not found")
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{checkpoint}: cannot read as a PyTorch checkpoint with weights_only=True ({first}); "
                              "pass a generator file such as g_02500000") from None
    if isinstance(data, dict) and "generator" in data:
        data = data["generator"]
    if not isinstance(data, dict) or not any(str(k).startswith("conv_pre.") for k in data):
        raise CheckpointError(f"{checkpoint}: no HiFi-GAN generator weights (expected {{'generator': state_dict}} "
                              "with conv_pre.* keys); discriminator files (do_*) cannot be imported")
    vocoder = Vocoder(VocoderConfig(mel=mel, generator="hifigan", hifigan=generator_config))
    vocoder.generator.load_jik876_state_dict({k: v.float() for k, v in data.items()})
    vocoder.save_pretrained(out_dir, extra={"imported_from": checkpoint.name})
    return vocoder.eval()
