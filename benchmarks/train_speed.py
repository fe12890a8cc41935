"""Training speed and peak memory of the VC model: steps/s of ``vc_trainer.train_step`` on random mels.

    python benchmarks/train_speed.py                               # default config, batch 32 x 128 frames
    python benchmarks/train_speed.py --config voiceconv/conf/adain_vc_vq_adv.yaml --device cpu --threads 2
    python benchmarks/train_speed.py --config recipes/mini/conf/shipped_v2.yaml --threads 1 --compile   # what pays

For each device (CPU, plus CUDA when available, unless ``--device`` picks one) it runs a few
warm-up steps, then ``--repeats`` timed blocks of ``--steps`` steps, and prints the median steps/s
with the spread, segments/s, and the peak memory: the process's peak RSS (``ru_maxrss``, which
includes Python and torch themselves) on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
No data is needed: the batch is random log-mels around the silence-to-speech range.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from voiceconv.models.vc_model import VCModel
from voiceconv.training.distributed import Distributed
from voiceconv.training.loop import NanGuard
from voiceconv.training.vc_trainer import State, _optimizer, load_experiment, train_step

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "voiceconv" / "conf" / "adain_vc.yaml"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(config: Path, device: torch.device, batch_size: int, segment: int, steps: int, repeats: int,
              warmup: int, n_speakers: int = 100, overrides: list[str] | None = None, compile: bool = False) -> dict:
    experiment = load_experiment(config, [f"train.batch_size={batch_size}", f"train.segment_frames={segment}",
                                          *(overrides or [])])
    torch.manual_seed(0)
    model = VCModel(experiment.model, n_speakers=n_speakers).to(device)
    # torch.compile wraps the module; attribute access (mel_config, ...) passes through to the model.
    trained = torch.compile(model) if compile else model
    state = State(trained, _optimizer(model, experiment.train), experiment.train, Distributed(device=device),
                  NanGuard(experiment.train.max_bad_steps))
    generator = torch.Generator().manual_seed(0)
    n_mels = experiment.model.mel.n_mels
    batch = {
        "mel": torch.randn(batch_size, n_mels, segment, generator=generator) * 2.0 - 6.0,  # log-mel-like values
        "speaker": torch.randint(0, n_speakers, (batch_size,), generator=generator),
        "mask": torch.ones(batch_size, segment),
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        train_step(state, batch)
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            train_step(state, batch)
        _sync(device)
        rates.append(steps / (time.perf_counter() - start))
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"device": str(device), "parameters": model.n_parameters(), "steps_per_s": statistics.median(rates),
            "min": min(rates), "max": max(rates), "peak_mib": peak_mib,
            "bf16": (experiment.train.bf16 and device.type == "cuda") or
                    (experiment.train.cpu_bf16 and device.type == "cpu")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="experiment YAML (default adain_vc)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="only this device (default: cpu and cuda if any)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--segment", type=int, default=128, help="frames per segment (AdaIN-VC: 128)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compilation is untimed: "
                        "it happens in the warm-up steps)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.cpu_bf16=true model.decoder.channels=96")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    extra = " ".join(args.overrides) + (" (torch.compile)" if args.compile else "")
    print(f"config {args.config.name} {extra}, batch {args.batch_size} x {args.segment} frames, {args.repeats} x "
          f"{args.steps} steps after {args.warmup} warm-up, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    for name in devices:
        device = torch.device(name)
        result = benchmark(args.config, device, args.batch_size, args.segment, args.steps, args.repeats,
                           args.warmup, overrides=args.overrides, compile=args.compile)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{label}: {result['parameters'] / 1e6:.2f} M params, {result['steps_per_s']:.3f} steps/s "
              f"(min {result['min']:.3f}, max {result['max']:.3f}), "
              f"{result['steps_per_s'] * args.batch_size:.1f} segments/s, peak memory {result['peak_mib']:.0f} MiB"
              f"{' (bf16 autocast)' if result['bf16'] else ''}")


if __name__ == "__main__":
    main()
