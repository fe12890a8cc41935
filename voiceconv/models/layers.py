"""Building blocks shared by the AdaIN-VC encoders and decoder.

Everything here works on ``(B, C, T)`` tensors and accepts an optional frame mask ``(B, T)``
(1 = real frame, 0 = padding) so that padded batches give the same statistics as unpadded ones.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn

from voiceconv.errors import ConfigError, VoiceconvError

ACTIVATIONS = {"relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2), "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    """``nn.Module`` for an activation name from a config."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SameConv1d(nn.Module):
    """Conv1d whose output has ``ceil(T / stride)`` frames for any kernel size and any ``T >= 1``.

    Padding is done by hand so even kernel sizes (the conv bank uses 2, 4, 6, 8) stay aligned:
    ``k // 2`` frames on the left and ``(k - 1) // 2`` on the right. The official AdaIN-VC pads with
    ``reflect``; we use ``replicate`` because reflect needs more frames than the padding, and the
    speaker encoder must accept clips of a single frame.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.pad = (kernel_size // 2, (kernel_size - 1) // 2)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T) -> (B, C_out, ceil(T / stride))``."""
        if self.pad != (0, 0):
            x = F.pad(x, self.pad, mode="replicate")
        return self.conv(x)


# Long-input and streaming conversion (voiceconv.convert.engine) run the model window by window but want
# the statistics of the whole utterance; a hook set here supplies them. A context variable keeps the
# hook local to the calling thread, and with no hook set instance_norm behaves as below.
_NORM_HOOK: contextvars.ContextVar = contextvars.ContextVar("voiceconv_instance_norm_hook", default=None)


@contextlib.contextmanager
def instance_norm_hook(hook):
    """Within this block every :func:`instance_norm` call returns ``hook(x, mask, eps)`` instead."""
    token = _NORM_HOOK.set(hook)
    try:
        yield
    finally:
        _NORM_HOOK.reset(token)


def instance_norm(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm without affine parameters, over real frames only.

    ``x``: ``(B, C, T)``; ``mask``: ``(B, T)`` or None. Unlike ``F.instance_norm`` this accepts
    ``T == 1`` (the output is then zero) and ignores padded frames, so a padded utterance gets the
    same statistics as the unpadded one.
    """
    hook = _NORM_HOOK.get()
    if hook is not None:
        return hook(x, mask, eps)
    dtype = x.dtype
    x = x.float()  # statistics in float32 even under bf16/fp16 autocast
    if mask is None:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
    else:
        weight = mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
        count = weight.sum(dim=-1, keepdim=True).clamp_min(1.0)
        mean = (x * weight).sum(dim=-1, keepdim=True) / count
        var = ((x - mean).pow(2) * weight).sum(dim=-1, keepdim=True) / count
    return ((x - mean) * torch.rsqrt(var + eps)).to(dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Temporal average ``(B, C, T) -> (B, C)`` over real frames (all frames when ``mask`` is None)."""
    if mask is None:
        return x.mean(dim=-1)
    weight = mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
    return (x * weight).sum(dim=-1) / weight.sum(dim=-1).clamp_min(1.0)


def subsample_mask(mask: torch.Tensor | None, stride: int) -> torch.Tensor | None:
    """Mask after a stride-``stride`` conv: output frame ``i`` is centred on input frame ``stride * i``."""
    if mask is None or stride == 1:
        return mask
    return mask[:, ::stride]  # (B, ceil(T / stride))


def upsample_mask(mask: torch.Tensor | None, factor: int) -> torch.Tensor | None:
    """Mask after upsampling by ``factor``: every frame is repeated ``factor`` times."""
    if mask is None or factor == 1:
        return mask
    return mask.repeat_interleave(factor, dim=-1)  # (B, T * factor)


def pixel_shuffle_1d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Trade channels for time: ``(B, C * factor, T) -> (B, C, T * factor)`` (AdaIN-VC's decoder upsampling)."""
    batch, channels, frames = x.shape
    x = x.view(batch, channels // factor, factor, frames)  # (B, C, factor, T)
    x = x.permute(0, 1, 3, 2)  # (B, C, T, factor): the factor sub-frames of frame t are adjacent
    return x.reshape(batch, channels // factor, frames * factor)  # (B, C, T * factor)


class ConvBank(nn.Module):
    """Convolutions of kernel sizes ``bank_scale, 2 * bank_scale, ..., bank_size`` in parallel (CBHG-style).

    Their outputs and the input are concatenated and projected to ``out_channels`` by a 1x1 conv, as
    in AdaIN-VC's ``conv_bank`` + ``in_conv``; the bank sees several time scales at once.
    """

    def __init__(self, in_channels: int, bank_channels: int, out_channels: int, bank_size: int, bank_scale: int,
                 act: str):
        super().__init__()
        kernel_sizes = list(range(bank_scale, bank_size + 1, bank_scale))
        if not kernel_sizes:
            raise ConfigError(f"bank_size ({bank_size}) must be >= bank_scale ({bank_scale})")
        self.bank = nn.ModuleList(SameConv1d(in_channels, bank_channels, k) for k in kernel_sizes)
        self.project = nn.Conv1d(in_channels + bank_channels * len(kernel_sizes), out_channels, 1)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T) -> (B, out_channels, T)``."""
        outs = [self.act(conv(x)) for conv in self.bank] + [x]
        return self.act(self.project(torch.cat(outs, dim=1)))  # concat on channels: (B, C_in + n*C_bank, T)


class ConvBlock(nn.Module):
    """Two convs with a residual path; the second conv subsamples time by ``stride``.

    With ``norm=True`` each conv is followed by instance norm without affine parameters
    (content encoder); the speaker encoder uses ``norm=False`` because it *wants* the
    per-utterance statistics that IN removes.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, act: str, dropout: float, norm: bool):
        super().__init__()
        self.conv1 = SameConv1d(channels, channels, kernel_size)
        self.conv2 = SameConv1d(channels, channels, kernel_size, stride=stride)
        self.stride = stride
        self.norm = norm
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, C, T), (B, T) -> (B, C, ceil(T / stride)), (B, ceil(T / stride))``."""
        y = self.conv1(x)
        if self.norm:
            y = instance_norm(y, mask)
        y = self.dropout(self.act(y))
        y = self.conv2(y)
        mask = subsample_mask(mask, self.stride)
        if self.norm:
            y = instance_norm(y, mask)
        y = self.dropout(self.act(y))
        if self.stride > 1:
            # Residual at the lower rate; ceil_mode keeps ceil(T / stride) frames like the strided conv.
            x = F.avg_pool1d(x, kernel_size=self.stride, ceil_mode=True)
        return x + y, mask


class AdaIN(nn.Module):
    """Instance norm (no affine) followed by a per-channel scale and bias predicted from a condition vector.

    AdaIN-VC's ``append_cond`` multiplies by the raw Linear output. We predict ``1 + scale``
    instead (the same function class: it only shifts the Linear's bias by one) so that at
    initialisation the layer is close to plain IN and the decoder trains stably from the start.
    """

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.affine = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, C, T)``, ``cond (B, D)``, ``mask (B, T)`` -> ``(B, C, T)``."""
        scale, bias = self.affine(cond).unsqueeze(-1).chunk(2, dim=1)  # each (B, C, 1)
        return instance_norm(x, mask) * (1.0 + scale) + bias


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coefficient * grad, None


def gradient_reversal(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coefficient`` backward (Ganin & Lempitsky 2015)."""
    return _GradientReversal.apply(x, float(coefficient))


def check_dilated_stack(owner: str, kernel_sizes, dilations) -> None:
    """A :func:`dilated_conv_stack` config must pair each kernel with a dilation and keep lengths (odd kernels)."""
    if len(kernel_sizes) != len(dilations) or not kernel_sizes:
        raise VoiceconvError(f"{owner}: kernel_sizes and dilations need the same, non-zero length")
    if any(kernel % 2 == 0 for kernel in kernel_sizes):
        raise VoiceconvError(f"{owner}: kernel_sizes must be odd (same-length convolutions), got {list(kernel_sizes)}")


def dilated_conv_stack(in_channels: int, channels: int, kernel_sizes, dilations,
                       nonlinearity: type[nn.Module]) -> nn.Sequential:
    """Same-length dilated convolutions ``(B, in_channels, T) -> (B, channels, T)``, each followed by
    ``nonlinearity`` and a batch norm (the frame layers of the speaker critic and the phone recogniser)."""
    layers: list[nn.Module] = []
    for kernel, dilation in zip(kernel_sizes, dilations):
        layers += [nn.Conv1d(in_channels, channels, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2),
                   nonlinearity(), nn.BatchNorm1d(channels)]
        in_channels = channels
    return nn.Sequential(*layers)


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode (batch norms on their running statistics) with no trainable parameter."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
