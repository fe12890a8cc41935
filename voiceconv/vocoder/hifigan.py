"""HiFi-GAN generator (Kong et al. 2020), V1/V2/V3, with the public checkpoints' key layout.

The module names (``conv_pre``, ``ups.N``, ``resblocks.N.convs1.M`` / ``convs2.M`` for resblock
"1" or ``convs.M`` for resblock "2", ``conv_post``) follow the jik876/hifi-gan release, so its
``g_*`` checkpoints (LJ, VCTK, UNIVERSAL_V1) and anything trained with that code load unchanged.
Every convolution is weight-normalised through ``torch.nn.utils.parametrizations.weight_norm``;
:meth:`HiFiGANGenerator.jik876_state_dict` / :meth:`load_jik876_state_dict` translate between
torch's ``parametrizations.weight.original0/1`` names and the legacy ``weight_g`` / ``weight_v``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from voiceconv.errors import CheckpointError
from voiceconv.features import MelConfig

LRELU_SLOPE = 0.1  # HiFi-GAN's leaky ReLU slope inside the network


@dataclass
class HiFiGANConfig:
    resblock: str = "1"  # "1" (three dilated conv pairs, V1/V2) or "2" (two dilated convs, V3)
    upsample_rates: tuple = (8, 8, 2, 2)  # V1; the product must equal the mel hop (256)
    upsample_kernel_sizes: tuple = (16, 16, 4, 4)  # V1: twice each rate
    upsample_initial_channel: int = 512  # V1 (V2: 128, V3: 256)
    resblock_kernel_sizes: tuple = (3, 7, 11)  # V1/V2 (V3: 3, 5, 7)
    resblock_dilation_sizes: tuple = field(default_factory=lambda: ((1, 3, 5), (1, 3, 5), (1, 3, 5)))  # V1/V2

    def __post_init__(self) -> None:
        self.resblock = str(self.resblock)
        if self.resblock not in ("1", "2"):
            raise ValueError(f"resblock must be '1' or '2', got {self.resblock!r}")
        self.upsample_rates = tuple(int(r) for r in self.upsample_rates)
        self.upsample_kernel_sizes = tuple(int(k) for k in self.upsample_kernel_sizes)
        self.resblock_kernel_sizes = tuple(int(k) for k in self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = tuple(tuple(int(d) for d in ds) for ds in self.resblock_dilation_sizes)
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (kernel - rate) % 2:
                raise ValueError(f"upsample kernel {kernel} minus rate {rate} must be even to keep lengths exact")

    @property
    def hop_length(self) -> int:
        hop = 1
        for rate in self.upsample_rates:
            hop *= rate
        return hop


# The three published variants (jik876/hifi-gan config_v1/v2/v3.json).
HIFIGAN_V1 = HiFiGANConfig()
HIFIGAN_V2 = HiFiGANConfig(upsample_initial_channel=128)
HIFIGAN_V3 = HiFiGANConfig(
    resblock="2",
    upsample_rates=(8, 8, 4),
    upsample_kernel_sizes=(16, 16, 8),
    upsample_initial_channel=256,
    resblock_kernel_sizes=(3, 5, 7),
    resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
)
PRESETS = {"v1": HIFIGAN_V1, "v2": HIFIGAN_V2, "v3": HIFIGAN_V3}


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding for an odd kernel with dilation."""
    return (kernel_size * dilation - dilation) // 2


def _wn_conv(channels_in: int, channels_out: int, kernel_size: int, dilation: int = 1, init_std=None) -> nn.Module:
    conv = nn.Conv1d(channels_in, channels_out, kernel_size, 1, dilation=dilation,
                     padding=get_padding(kernel_size, dilation))
    if init_std is not None:
        nn.init.normal_(conv.weight, 0.0, init_std)  # HiFi-GAN init_weights: N(0, 0.01)
    return weight_norm(conv)


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with residuals: ``(B, C, L) -> (B, C, L)``."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple):
        super().__init__()
        self.convs1 = nn.ModuleList(_wn_conv(channels, channels, kernel_size, d, 0.01) for d in dilations)
        self.convs2 = nn.ModuleList(_wn_conv(channels, channels, kernel_size, 1, 0.01) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            xt = conv1(F.leaky_relu(x, LRELU_SLOPE))
            xt = conv2(F.leaky_relu(xt, LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nn.Module):
    """Dilated convs with residuals (the lighter V3 block): ``(B, C, L) -> (B, C, L)``."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple):
        super().__init__()
        self.convs = nn.ModuleList(_wn_conv(channels, channels, kernel_size, d, 0.01) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HiFiGANGenerator(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> waveform ``(B, T * hop)`` by transposed-conv upsampling."""

    def __init__(self, config: HiFiGANConfig, mel: MelConfig):
        super().__init__()
        if config.hop_length != mel.hop_length:
            raise ValueError(
                f"HiFi-GAN upsample_rates {list(config.upsample_rates)} multiply to {config.hop_length}, "
                f"but the mel hop is {mel.hop_length}; choose rates whose product is the hop"
            )
        self.config, self.mel = config, mel
        self.num_kernels = len(config.resblock_kernel_sizes)
        channels = config.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(mel.n_mels, channels, 7, 1, padding=3))
        block_class = ResBlock1 if config.resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
            up = nn.ConvTranspose1d(channels // 2**i, channels // 2 ** (i + 1), kernel, rate,
                                    padding=(kernel - rate) // 2)
            nn.init.normal_(up.weight, 0.0, 0.01)  # HiFi-GAN init_weights
            self.ups.append(weight_norm(up))
            for kernel_size, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(block_class(channels // 2 ** (i + 1), kernel_size, dilations))
        self.conv_post = weight_norm(nn.Conv1d(channels // 2 ** len(config.upsample_rates), 1, 7, 1, padding=3))

    @property
    def receptive_field_frames(self) -> int:
        """A generous bound on the frames of context each side that reach an output sample."""
        samples_per_unit, total = self.mel.hop_length, 3.0  # conv_pre reaches 3 frames
        for i, rate in enumerate(self.config.upsample_rates):
            samples_per_unit //= rate
            reach = sum(
                sum(get_padding(k, d) + get_padding(k) for d in ds) if self.config.resblock == "1"
                else sum(get_padding(k, d) for d in ds)
                for k, ds in zip(self.config.resblock_kernel_sizes, self.config.resblock_dilation_sizes)
            )
            total += (reach + self.config.upsample_kernel_sizes[i]) * samples_per_unit / self.mel.hop_length
        return int(total) + 4  # + conv_post and rounding

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel (B, n_mels, T)`` -> ``audio (B, T * hop)``."""
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            # The parallel resblocks (one per kernel size) are averaged: multi-receptive-field fusion.
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        # The original applies the default 0.01 slope here (not LRELU_SLOPE); kept for weight compatibility.
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x).squeeze(1)  # (B, 1, T * hop) -> (B, T * hop)

    # ---- weight norm and the jik876 key layout -------------------------------------------------

    def _weight_norm_modules(self):
        return [m for m in self.modules() if parametrize.is_parametrized(m, "weight")]

    def remove_weight_norm(self) -> None:
        """Fold ``g * v / ||v||`` into plain weights (faster inference; training needs it unfolded)."""
        for module in self._weight_norm_modules():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def jik876_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with ``*.weight_g`` / ``*.weight_v`` keys, as the public checkpoints store it."""
        out = {}
        for key, value in self.state_dict().items():
            if key.endswith(".parametrizations.weight.original0"):
                out[key.replace(".parametrizations.weight.original0", ".weight_g")] = value
            elif key.endswith(".parametrizations.weight.original1"):
                out[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
            elif key.endswith(".weight") and not key.endswith("_g") and self._is_folded_conv(key):
                # Folded after remove_weight_norm: g = ||w|| over all but dim 0 and v = w is an exact inverse.
                dims = tuple(range(1, value.dim()))
                out[key[: -len(".weight")] + ".weight_g"] = value.norm(dim=dims, keepdim=True)
                out[key[: -len(".weight")] + ".weight_v"] = value
            else:
                out[key] = value
        return out

    def _is_folded_conv(self, key: str) -> bool:
        module = self.get_submodule(key[: -len(".weight")])
        return isinstance(module, (nn.Conv1d, nn.ConvTranspose1d))

    def load_jik876_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load ``weight_g`` / ``weight_v`` keys; raises :class:`CheckpointError` listing any mismatch."""
        if not self._weight_norm_modules():
            raise RuntimeError("load_jik876_state_dict needs the weight-norm parametrisation (load before folding)")
        own = self.state_dict()
        translated = {}
        for key, value in state_dict.items():
            if key.endswith(".weight_g"):
                key = key[: -len(".weight_g")] + ".parametrizations.weight.original0"
            elif key.endswith(".weight_v"):
                key = key[: -len(".weight_v")] + ".parametrizations.weight.original1"
            translated[key] = value
        missing = sorted(set(own) - set(translated))
        unexpected = sorted(set(translated) - set(own))
        wrong = sorted(k for k in set(own) & set(translated) if tuple(own[k].shape) != tuple(translated[k].shape))
        if missing or unexpected or wrong:
            details = []
            if missing:
                details.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                details.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
            if wrong:
                details.append("shape mismatch " + ", ".join(
                    f"{k}: checkpoint {tuple(translated[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:5]))
            raise CheckpointError(
                "HiFi-GAN weights do not fit this generator config (" + "; ".join(details) + "); "
                "check that the config (resblock, upsample rates/kernels, channels) is the one the weights were "
                "trained with"
            )
        self.load_state_dict(translated)
