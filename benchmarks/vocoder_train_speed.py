"""What a vocoder training step costs on this machine, with and without the discriminators (issue 13).

    python benchmarks/vocoder_train_speed.py --threads 2
    python benchmarks/vocoder_train_speed.py --threads 1 --variants recon gan_light_mrd --steps 3

The generator is the shipped one's architecture (``voiceconv/pretrained/vocoder/config.json``, or
``--vocoder DIR``); the training settings are ``recipes/mini/conf/vocoder_shipped.yaml``'s (batch 8 x 32
frames). Each variant changes one thing, so the table says what pays on a CPU:

- ``recon``: reconstruction losses only (how the shipped vocoder was trained);
- ``gan_full``: with HiFi-GAN's multi-period and UnivNet's multi-resolution discriminators at full width;
- ``gan_half_mpd``: the mini recipe's MPD at half width, plus the MRD;
- ``gan_light_mrd``: the MRD alone (Vocos-style), no MPD;
- ``gan_quarter_mpd``: the MPD at a quarter of HiFi-GAN's width, plus the MRD;
- ``..._bf16``: the same with bf16 autocast on the CPU (``train.cpu_bf16``);
- ``..._iters0``: the generator without its Griffin-Lim phase-refinement iterations (``consistency_iters 0``).

Prints seconds per step (median of ``--repeats`` blocks after ``--warmup`` steps) and the peak RSS.
The audio is random noise shaped like speech levels, and no data is needed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RECIPE_CONFIG = REPO / "recipes" / "mini" / "conf" / "vocoder_shipped.yaml"
ADVERSARIAL = ["train.adversarial_start_step=0"]
HALF_MPD = ADVERSARIAL + ["train.discriminator.period_channels=[16,64,256,512,512]"]
MRD_ONLY = ADVERSARIAL + ["train.discriminator.periods=[]"]
QUARTER_MPD = ADVERSARIAL + ["train.discriminator.period_channels=[8,32,128,256,256]"]
BF16 = ["train.cpu_bf16=true"]
NO_ITERS = ["model.istft.consistency_iters=0"]
VARIANTS = {
    "recon": [],
    "recon_bf16": BF16,
    "recon_iters0": NO_ITERS,
    "gan_full": ADVERSARIAL + ["train.discriminator.period_channels=[32,128,512,1024,1024]"],
    "gan_half_mpd": HALF_MPD,
    "gan_half_mpd_bf16": HALF_MPD + BF16,
    "gan_light_mrd": MRD_ONLY,
    "gan_light_mrd_bf16": MRD_ONLY + BF16,
    "gan_light_mrd_bf16_iters0": MRD_ONLY + BF16 + NO_ITERS,
    "gan_quarter_mpd_bf16_iters0": QUARTER_MPD + BF16 + NO_ITERS,
}


def experiment_for(vocoder_dir: Path, overrides: list[str]):
    from voiceconv.checkpoint import read_config
    from voiceconv.config import apply_overrides, from_dict, load_yaml
    from voiceconv.training.vocoder_trainer import VocoderExperiment

    data = load_yaml(RECIPE_CONFIG)
    data["model"] = read_config(vocoder_dir, "vocoder")["config"]
    return from_dict(VocoderExperiment, apply_overrides(data, overrides))


def random_batch(experiment, seed: int = 0) -> dict[str, torch.Tensor]:
    """``audio (B, S * hop)`` noise at speech-like level and its log-mel ``(B, n_mels, S)``."""
    from voiceconv.features import MelSpectrogram

    train, mel = experiment.train, experiment.model.mel
    generator = torch.Generator().manual_seed(seed)
    audio = 0.1 * torch.randn(train.batch_size, train.segment_frames * mel.hop_length, generator=generator)
    return {"audio": audio, "mel": MelSpectrogram(mel)(audio)[..., : train.segment_frames]}


def benchmark(experiment, steps: int, repeats: int, warmup: int) -> dict:
    from voiceconv.training.distributed import Distributed
    from voiceconv.training.vocoder_trainer import build_state, train_step

    torch.manual_seed(0)
    state = build_state(experiment, Distributed())
    batch = random_batch(experiment)
    for _ in range(warmup):
        train_step(state, batch)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            train_step(state, batch)
        seconds.append((time.perf_counter() - start) / steps)
    return {"seconds": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "generator": sum(p.numel() for p in state.generator.parameters()),
            "discriminators": sum(p.numel() for p in state.discriminators.parameters()),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocoder", type=Path, default=REPO / "voiceconv" / "pretrained" / "vocoder",
                        help="vocoder directory whose architecture is trained (default: the shipped one)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"vocoder {args.vocoder}, settings {RECIPE_CONFIG.relative_to(REPO)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; {args.repeats} x {args.steps} steps after {args.warmup} warm-up")
    print(f"{'variant':28s} {'s/step':>8s} {'range':>15s} {'G params':>9s} {'D params':>9s} {'peak RSS':>9s}")
    base = None
    for name in args.variants:
        experiment = experiment_for(args.vocoder, VARIANTS[name])
        result = benchmark(experiment, args.steps, args.repeats, args.warmup)
        base = base or result["seconds"]
        print(f"{name:28s} {result['seconds']:8.2f} {result['min']:6.2f}-{result['max']:<6.2f}  "
              f"{result['generator'] / 1e6:8.2f}M {result['discriminators'] / 1e6:8.2f}M "
              f"{result['peak_mib']:7.0f} MiB   ({result['seconds'] / base:.1f}x the first variant)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
