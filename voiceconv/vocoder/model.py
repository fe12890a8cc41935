"""``Vocoder``: log-mel -> waveform, whichever generator is inside.

::

    vocoder = Vocoder.from_pretrained()           # the shipped default (CheckpointError if none is installed)
    audio = vocoder.decode(mel)                   # (n_mels, T) -> (T * hop,) float32 CPU tensor
    fallback = Vocoder.griffin_lim(mel_config)    # no weights needed; warns that it sounds robotic

The generator is chosen by ``VocoderConfig.generator``: ``"istft"`` (default, ConvNeXt + inverse
STFT, fast on CPU), ``"hifigan"`` (V1/V2/V3, loads the public jik876 weights) or
``"griffin_lim"``. :meth:`Vocoder.decode` cuts long input into overlapping chunks, so memory stays
bounded for any length and the crossfaded result equals one-piece decoding.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from voiceconv.checkpoint import WEIGHTS_NAME, load_pretrained, save_pretrained
from voiceconv.config import from_dict, to_dict
from voiceconv.errors import CheckpointError, VoiceconvError
from voiceconv.features import MelConfig
from voiceconv.vocoder.generator import ISTFTGenerator, ISTFTGeneratorConfig
from voiceconv.vocoder.griffin_lim import GriffinLim, GriffinLimConfig
from voiceconv.vocoder.hifigan import HiFiGANConfig, HiFiGANGenerator

logger = logging.getLogger(__name__)

KIND = "vocoder"  # checkpoint kind in config.json
GENERATORS = ("istft", "hifigan", "griffin_lim")
INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GRIFFIN_LIM_WARNING = "Griffin-Lim fallback: expect robotic quality (install or train a neural vocoder)"


@dataclass
class VocoderConfig:
    mel: MelConfig = field(default_factory=MelConfig)  # the HiFi-GAN 22.05 kHz / 80-band mel
    generator: str = "istft"  # "istft" (default, fast on CPU), "hifigan" or "griffin_lim"
    istft: ISTFTGeneratorConfig = field(default_factory=ISTFTGeneratorConfig)  # used when generator == "istft"
    hifigan: HiFiGANConfig = field(default_factory=HiFiGANConfig)  # used when generator == "hifigan" (V1 default)
    griffin_lim: GriffinLimConfig = field(default_factory=GriffinLimConfig)  # used when generator == "griffin_lim"
    # The network's autocast dtype when decode() is not given one: "float32" or "bfloat16". bfloat16 is only
    # used where the hardware computes it natively (CUDA with bf16, CPUs with AVX-512 BF16 or AMX), because
    # emulated bf16 is slower than float32. The shipped vocoder sets it: 22 % faster decoding on such a CPU
    # with the same quality (`benchmarks/vocoder_quality.py --dtype`).
    inference_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {', '.join(GENERATORS)}; got {self.generator!r}")
        if self.inference_dtype not in INFERENCE_DTYPES:
            raise ValueError(f"inference_dtype must be one of {', '.join(INFERENCE_DTYPES)}; "
                             f"got {self.inference_dtype!r}")

    def to_dict(self) -> dict:
        """Only the chosen generator's section is kept, so a saved config says what it is."""
        data = to_dict(self)
        for name in GENERATORS:
            if name != self.generator:
                data.pop(name)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> VocoderConfig:
        return from_dict(cls, data)


def build_generator(config: VocoderConfig) -> nn.Module:
    """The generator module named by ``config.generator``."""
    if config.generator == "istft":
        return ISTFTGenerator(config.istft, config.mel)
    if config.generator == "hifigan":
        return HiFiGANGenerator(config.hifigan, config.mel)
    return GriffinLim(config.griffin_lim, config.mel)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX); read from /proc/cpuinfo (Linux only)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast on ``device`` runs on native bf16 hardware (and so pays)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()


class Vocoder(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> waveform ``(B, T * hop)`` at ``mel.sample_rate``."""

    def __init__(self, config: VocoderConfig | None = None):
        super().__init__()
        self.config = config or VocoderConfig()
        self.generator = build_generator(self.config)
        self._warned = False
        # (key, generator copy) for decoding in a low-precision dtype; see _low_precision_generator.
        self._low_precision: tuple[tuple, nn.Module] | None = None

    # ---- properties ---------------------------------------------------------------------------

    @property
    def mel_config(self) -> MelConfig:
        return self.config.mel

    @property
    def sample_rate(self) -> int:
        return self.config.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.mel.hop_length

    @property
    def is_neural(self) -> bool:
        return self.config.generator != "griffin_lim"

    @property
    def device(self) -> torch.device:
        tensors = list(self.generator.parameters()) or list(self.generator.buffers())
        return tensors[0].device if tensors else torch.device("cpu")

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())

    @property
    def inference_dtype(self) -> torch.dtype | None:
        """The autocast dtype :meth:`decode` uses by default: ``config.inference_dtype`` where the device
        computes it natively, else None (float32)."""
        dtype = INFERENCE_DTYPES[self.config.inference_dtype]
        if dtype == torch.float32 or not self.is_neural or not native_bf16(self.device):
            return None
        return dtype

    def train(self, mode: bool = True) -> Vocoder:
        # Changing modes starts afresh: weights written through ``.data`` bypass the version counters
        # that _low_precision_generator checks, and a training loop switches modes around validation.
        self._low_precision = None
        return super().train(mode)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def griffin_lim(cls, mel_config: MelConfig | None = None, n_iter: int = 32, device=None) -> Vocoder:
        """The weight-free fallback: pseudo-inverse mel + ``n_iter`` fast Griffin-Lim iterations."""
        config = VocoderConfig(mel=mel_config or MelConfig(), generator="griffin_lim",
                               griffin_lim=GriffinLimConfig(n_iter=n_iter))
        return cls(config).to(device or default_device()).eval()

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device=None) -> Vocoder:
        """Load a vocoder directory (``None``: the one shipped in ``voiceconv/pretrained/vocoder``).

        Raises :class:`CheckpointError` when there are no weights, so a caller can fall back to
        :meth:`griffin_lim` knowingly.
        """
        if directory is None:
            from voiceconv.pretrained import default_vocoder_dir

            directory = default_vocoder_dir()
            if not (directory / WEIGHTS_NAME).is_file():
                raise CheckpointError(
                    f"no neural vocoder is installed ({directory} has no {WEIGHTS_NAME}); train one with "
                    "'voiceconv train-vocoder', import HiFi-GAN weights with 'voiceconv import-vocoder', pass its "
                    "directory explicitly, or use Vocoder.griffin_lim() (robotic quality)"
                )
        meta, state_dict = load_pretrained(directory, kind=KIND)
        try:
            config = VocoderConfig.from_dict(meta["config"])
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{directory}: invalid vocoder config in config.json ({error})") from None
        vocoder = cls(config)
        vocoder.load_generator_state(state_dict, source=str(directory))
        return vocoder.to(device or default_device()).eval()

    def load_generator_state(self, state_dict: dict, source: str = "checkpoint") -> None:
        """Load generator weights (HiFi-GAN: jik876 ``weight_g``/``weight_v`` keys, then folded)."""
        if isinstance(self.generator, HiFiGANGenerator):
            self.generator.load_jik876_state_dict(state_dict)
            self.generator.remove_weight_norm()  # inference only: one plain weight per conv is faster
            return
        try:
            self.generator.load_state_dict(state_dict)
        except RuntimeError as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CheckpointError(
                f"{source}: weights do not fit the {self.config.generator} generator config ({first}); "
                "the config.json and model.safetensors come from different models"
            ) from None

    def generator_state_dict(self) -> dict[str, torch.Tensor]:
        if isinstance(self.generator, HiFiGANGenerator):
            return self.generator.jik876_state_dict()
        return self.generator.state_dict()

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (kind ``"vocoder"``) into ``directory``."""
        return save_pretrained(directory, KIND, self.config.to_dict(), self.generator_state_dict(), extra)

    # ---- inference ----------------------------------------------------------------------------

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Training path, no chunking: ``(B, n_mels, T)`` -> ``(B, T * hop)``."""
        return self.generator(mel)

    def decode(
        self,
        mel,
        chunk_frames: int | None = None,
        context_frames: int | None = None,
        fade_frames: int = 8,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Log-mel ``(n_mels, T)`` or ``(B, n_mels, T)`` -> float32 CPU waveform ``(T * hop,)`` / ``(B, T * hop)``.

        Input longer than ``chunk_frames`` (default 1024 frames, ~12 s; 4096 for Griffin-Lim, whose
        iterations spread further) is decoded in chunks that each see ``context_frames`` extra
        frames on both sides (default: the generator's receptive field + ``fade_frames``) and are
        crossfaded linearly over ``2 * fade_frames`` frames, so memory is bounded by the chunk size
        and, for the neural generators, the result equals one-piece decoding. ``dtype`` (e.g.
        ``torch.bfloat16``) runs the network under autocast (default: :attr:`inference_dtype`); the
        output is always float32 in [-1, 1].
        """
        if not self.is_neural and not self._warned:
            logger.warning(GRIFFIN_LIM_WARNING)
            self._warned = True
        mel = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel)
        unbatched = mel.dim() == 2
        if unbatched:
            mel = mel.unsqueeze(0)  # (1, n_mels, T)
        if mel.dim() != 3 or mel.shape[1] != self.mel_config.n_mels:
            raise VoiceconvError(
                f"expected a log-mel of shape (n_mels={self.mel_config.n_mels}, T) or (B, n_mels, T); "
                f"got {tuple(mel.shape)}"
            )
        if mel.shape[-1] == 0:
            raise VoiceconvError("cannot decode an empty mel (0 frames)")
        if not torch.isfinite(mel).all():
            raise VoiceconvError("the mel contains NaN or Inf values; check the model that produced it")
        if dtype is None:
            dtype = self.inference_dtype
        with torch.inference_mode():
            audio = self._decode_chunked(mel.to(self.device, torch.float32), chunk_frames, context_frames,
                                         fade_frames, dtype)
        audio = audio.float().clamp(-1.0, 1.0).cpu()
        return audio[0] if unbatched else audio

    def _run(self, mel: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        if dtype is None or dtype == torch.float32 or not self.is_neural:
            return self.generator(mel)
        with torch.autocast(device_type=mel.device.type, dtype=dtype):
            return self._low_precision_generator(dtype)(mel).float()

    def _low_precision_generator(self, dtype: torch.dtype) -> nn.Module:
        """The generator with its convolution and linear weights already in ``dtype``, for autocast decoding.

        Autocast casts every weight of those layers to ``dtype`` on each call, and keeps the cast only
        until the autocast region ends, so each decode (a streaming block: 46-50 frames with history)
        re-read and re-wrote all 7.7 M weights: 2.7 ms of the shipped vocoder's 7.9 ms network time on 70
        frames. Autocast leaves a weight already in ``dtype`` as it is, so this copy computes bit for bit
        what autocast computes from the float32 weights (tested); layers that autocast keeps in float32
        (LayerNorm) keep their float32 parameters. The copy runs in eval mode, as decoding does (the
        generators have no dropout or batch norm).

        The copy is made again whenever a parameter of the generator is changed in place (an optimizer
        step or ``load_state_dict`` moves its version counter) or replaced, and is dropped by ``train()``,
        ``eval()`` and ``to()`` / ``half()`` / ``cpu()``; weights written through ``.data`` bypass the version
        counters, so call ``eval()`` after such a write. Where no copy can be kept the generator itself
        runs under autocast: weight-normalised layers (a HiFi-GAN not yet folded: its weights are
        computed on each call anyway), parameters created under ``torch.inference_mode()`` (they have no
        version counter), or a generator without parameters.
        """
        parameters = list(self.generator.parameters())
        if (not parameters or any(p.is_inference() for p in parameters)
                or any(parametrize.is_parametrized(m) for m in self.generator.modules())):
            return self.generator
        key = (dtype, parameters[0].device, tuple((id(p), p._version) for p in parameters))
        cached = self._low_precision
        if cached is not None and cached[0] == key:
            return cached[1]
        self._low_precision = None  # drop the old copy before making the new one: bounded memory
        # deepcopy takes the cast weights from its memo, so the float32 ones are never copied.
        memo = {
            id(parameter): nn.Parameter(parameter.detach().to(dtype), requires_grad=False)
            for module in self.generator.modules()
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear))
            for parameter in module.parameters(recurse=False)
        }
        low = copy.deepcopy(self.generator, memo).eval().requires_grad_(False)
        self._low_precision = (key, low)
        return low  # not read back from self: another thread may have dropped it meanwhile

    def _apply(self, fn, recurse: bool = True):
        # .to(), .cpu(), .half() and the like: the copy would stay behind on the old device or dtype.
        self._low_precision = None
        return super()._apply(fn, recurse)

    def __getstate__(self):
        # Pickling (torch.save of the whole module, copy.deepcopy) leaves the copy out: it is remade on use.
        state = super().__getstate__()
        state["_low_precision"] = None
        return state

    def _decode_chunked(self, mel, chunk_frames, context_frames, fade, dtype) -> torch.Tensor:
        total = mel.shape[-1]
        hop = self.hop_length
        chunk = chunk_frames or (1024 if self.is_neural else 4096)
        context = context_frames if context_frames is not None else self.generator.receptive_field_frames + fade
        fade = min(fade, context, chunk // 2)
        if total <= chunk + 2 * context:
            return self._run(mel, dtype)
        # Core boundaries every `chunk` frames; a short tail joins the previous chunk so that
        # no core is shorter than its two crossfades.
        starts = list(range(0, total, chunk))
        if total - starts[-1] < 2 * fade + 1:
            starts.pop()
        ends = starts[1:] + [total]
        out = torch.zeros(mel.shape[0], total * hop, device=mel.device)
        ramp_up = (torch.arange(2 * fade * hop, device=mel.device) + 0.5) / (2 * fade * hop)
        for k, (start, end) in enumerate(zip(starts, ends)):
            first, last = k == 0, k == len(starts) - 1
            begin_in, end_in = max(0, start - context), min(total, end + context)
            piece = self._run(mel[..., begin_in:end_in], dtype).float()  # (B, (end_in - begin_in) * hop)
            # Kept region: the core plus half a crossfade each side that has a neighbour.
            keep_begin = start if first else start - fade
            keep_end = end if last else end + fade
            segment = piece[:, (keep_begin - begin_in) * hop : (keep_end - begin_in) * hop]
            weight = torch.ones(segment.shape[-1], device=mel.device)
            if not first:
                weight[: 2 * fade * hop] = ramp_up
            if not last:
                weight[-2 * fade * hop :] = 1.0 - ramp_up
            out[:, keep_begin * hop : keep_end * hop] += segment * weight
        return out
