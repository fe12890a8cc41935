"""Train (or fine-tune) a neural vocoder: one plain PyTorch GAN loop, resumable, DDP under torchrun.

Single process (CUDA when available, else CPU)::

    voiceconv train-vocoder --config voiceconv/conf/vocoder_istft.yaml --data prepared/ --out runs/vocoder

Resume (the run's own ``config.yaml`` is read back; overrides still apply)::

    voiceconv train-vocoder --data prepared/ --out runs/vocoder --resume train.steps=400000

Ctrl-C in a single process saves a resume point first (as the VC trainer does); a killed process
resumes from the last checkpoint.

Fine-tune on the mels a VC model reconstructs from real audio (fewer artifacts on converted speech),
starting from an existing vocoder. The reconstructions are made once, from whole utterances as a
conversion sees them, and kept in the run directory (``vc_mels.npy``)::

    voiceconv train-vocoder --config voiceconv/conf/vocoder_istft.yaml --data prepared/ --out runs/voc_ft \\
        --finetune-from-vc runs/adain_vc train.init_from=runs/vocoder/best

Several processes (gloo on CPU, nccl on GPUs; ``train.batch_size`` is the global batch)::

    torchrun --standalone --nproc_per_node 2 -m voiceconv.cli train-vocoder --config CONF --data D --out RUN

How a step works: :class:`~voiceconv.training.data.SegmentBatcher` returns mel segments with their aligned
audio, a pure function of ``(seed, step, rank)``. The generator turns the mel into a waveform.
Until ``adversarial_start_step`` only the reconstruction losses (``loss/mel``, ``loss/stft``)
train it, which converges in few steps on a CPU; after that the discriminators (multi-period +
multi-resolution STFT) take a least-squares GAN step and the generator adds ``loss/fm`` and
``loss/adv``. The generator's loss is ``sum(lambdas[k] * out[k])`` over the ``loss/*`` keys present.

Run directory (see :class:`voiceconv.training.run_directory.RunDirectory`): ``config.yaml``,
``train_state.pt`` (generator, discriminators, both optimizers, step, RNG of every rank),
``last/``, ``best/`` (lowest validation log-mel L1) and ``checkpoints/step_XXXXXXX/``, each a
vocoder directory that :meth:`Vocoder.from_pretrained` loads; ``tb/`` and ``metrics.jsonl``.

It passes 400 lines because the generator/discriminator step, the learning-rate schedule, fine-tuning on
VC output and the Griffin-Lim baseline in validation all belong to the vocoder alone. What both trainers
share (loop, checkpoints, logs, resume) lives in :mod:`voiceconv.training.loop`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from voiceconv.atomic import atomic_path
from voiceconv.checkpoint import (
    load_pretrained,
    read_config,
    resolve_model_dir,
)
from voiceconv.errors import ConfigError, TrainingError
from voiceconv.training import loop
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import Distributed, any_rank, barrier, seed_everything, unwrap
from voiceconv.training.loop import (
    NanGuard,
    TrainingState,
    bf16_autocast,
    check_schedule,
    experiment_config,
    open_run,
    process_group,
    run_loop,
    write_run_config,
)
from voiceconv.training.run_directory import RunDirectory, RunLogger
from voiceconv.vocoder.discriminators import DiscriminatorConfig, Discriminators
from voiceconv.vocoder.hifigan import HiFiGANGenerator
from voiceconv.vocoder.losses import (
    DEFAULT_STFT_RESOLUTIONS,
    MelLoss,
    MultiResolutionSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from voiceconv.vocoder.model import KIND, Vocoder, VocoderConfig
from voiceconv.vocoder.quality import log_mel_l1, multi_resolution_stft_distance

logger = logging.getLogger(__name__)

MelTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class VocoderTrainConfig:
    steps: int = 500_000  # HiFi-GAN/Vocos train for 0.5-2.5 M steps on GPUs; CPU runs override this
    batch_size: int = 16  # HiFi-GAN batch_size; global over all DDP processes
    segment_frames: int = 32  # HiFi-GAN segment_size 8192 samples = 32 frames of hop 256
    lr_g: float = 2e-4  # HiFi-GAN learning_rate
    lr_d: float = 2e-4  # HiFi-GAN learning_rate (same for the discriminators)
    betas: tuple[float, float] = (0.8, 0.99)  # HiFi-GAN adam_b1, adam_b2 (AdamW)
    weight_decay: float = 0.01  # torch AdamW default, which HiFi-GAN uses
    final_lr_ratio: float = 0.1  # cosine decay of both learning rates to this fraction at `steps` (Vocos: cosine)
    # Steps with reconstruction losses only, before the discriminators join (fast convergence on small compute).
    adversarial_start_step: int = 20_000
    # Weight of every loss/* key; HiFi-GAN lambda_mel 45 and lambda_fm 2, adversarial 1; STFT loss as Parallel WaveGAN.
    lambdas: dict[str, float] = field(default_factory=lambda: {
        "loss/mel": 45.0, "loss/stft": 1.0, "loss/fm": 2.0, "loss/adv": 1.0})
    # (n_fft, hop, win) of the multi-resolution STFT loss: Parallel WaveGAN's three resolutions.
    stft_resolutions: tuple = DEFAULT_STFT_RESOLUTIONS
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)  # HiFi-GAN MPD + UnivNet MRD
    grad_clip: float = 0.0  # max gradient norm per network; <= 0 disables (HiFi-GAN does not clip)
    bf16: bool = True  # bf16 autocast for the networks on CUDA (ignored on CPU); losses stay float32
    # bf16 autocast on the CPU too: pays only on CPUs with bf16 instructions (AVX-512 BF16, AMX); measure it
    # with benchmarks/vocoder_train_speed.py
    cpu_bf16: bool = False
    log_every: int = 100  # scalars (averaged over the interval) to TensorBoard and metrics.jsonl
    val_every: int = 2_000  # validation on held-out utterances, with audio in TensorBoard
    checkpoint_every: int = 5_000  # last/, checkpoints/step_XXXXXXX/ and train_state.pt
    keep_checkpoints: int = 3  # newest periodic checkpoints kept; <= 0 keeps all
    n_val_utterances: int = 8  # utterances held out of training for validation
    val_max_frames: int = 512  # validation utterances are cut to this many frames (~6 s)
    n_audio_samples: int = 2  # validation utterances whose audio goes to TensorBoard
    seed: int = 0  # model init and data order; the same seed replays the same run
    max_bad_steps: int = 20  # abort after this many consecutive steps with a non-finite loss or gradient
    num_threads: int | None = None  # torch CPU threads per process; None keeps torch's default
    # VC model (or VC run) directory: train on the mels it reconstructs from real audio (--finetune-from-vc).
    finetune_from_vc: str | None = None
    init_from: str | None = None  # vocoder directory whose generator weights start the run (fine-tuning)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.stft_resolutions = tuple(tuple(int(v) for v in r) for r in self.stft_resolutions)
        check_schedule(self)


EXAMPLE_CONFIG = "voiceconv/conf/vocoder_istft.yaml"  # named in the CLI's error when --config is missing
VocoderExperiment = experiment_config("VocoderExperiment", __name__, VocoderConfig, VocoderTrainConfig)


load_experiment = VocoderExperiment.load  # (path, overrides) -> VocoderExperiment


@dataclass
class State(TrainingState):
    """Everything that changes during training."""

    generator: torch.nn.Module  # the Vocoder, wrapped in DistributedDataParallel when world_size > 1
    discriminators: torch.nn.Module  # Discriminators, DDP-wrapped likewise
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    config: VocoderTrainConfig
    ctx: Distributed
    guard: NanGuard
    mel_loss: MelLoss
    stft_loss: MultiResolutionSTFTLoss
    step: int = 0
    best_val: float = math.inf

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminators": self.discriminators}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def released(self) -> Vocoder:
        return unwrap(self.generator)


def learning_rate(base: float, step: int, config: VocoderTrainConfig) -> float:
    """Cosine decay from ``base`` to ``base * final_lr_ratio`` over ``config.steps``: a pure function of step."""
    return loop.cosine_decay(base, step, config.steps, config.final_lr_ratio)


def _clip(parameters, max_norm: float) -> torch.Tensor:
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)


def train_step(state: State, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One generator step (and, once adversarial, one discriminator step) on ``batch``.

    ``batch``: ``mel (B, n_mels, S)`` and ``audio (B, S * hop)``. Returns every unweighted ``loss/*``,
    ``loss/total`` (weighted generator loss), ``loss/disc``, the pre-clipping gradient norms, ``lr``
    and ``skipped`` (1 when the update was dropped because something was not finite).
    """
    config, generator, discriminators = state.config, state.generator, state.discriminators
    generator.train()
    discriminators.train()
    mel = batch["mel"].to(state.device, non_blocking=True)
    audio = batch["audio"].to(state.device, non_blocking=True)
    lr_g, lr_d = learning_rate(config.lr_g, state.step, config), learning_rate(config.lr_d, state.step, config)
    for group in state.opt_g.param_groups:
        group["lr"] = lr_g
    for group in state.opt_d.param_groups:
        group["lr"] = lr_d
    adversarial = state.step >= config.adversarial_start_step

    with bf16_autocast(config.bf16, state.device, cpu=config.cpu_bf16):
        generated = generator(mel)
    generated = generated.float()  # (B, S * hop); losses in float32

    values: dict[str, float] = {}
    disc_finite = True
    if adversarial:
        with bf16_autocast(config.bf16, state.device, cpu=config.cpu_bf16):
            # Real and generated audio in one batch: one pass through each sub-discriminator.
            outputs = discriminators(torch.cat([audio, generated.detach()]))
        real = [(logits.chunk(2)[0], [f.chunk(2)[0] for f in maps]) for logits, maps in outputs]
        fake = [(logits.chunk(2)[1], [f.chunk(2)[1] for f in maps]) for logits, maps in outputs]
        loss_disc = discriminator_loss(
            [(r.float(), m) for r, m in real], [(f.float(), m) for f, m in fake])
        state.opt_d.zero_grad(set_to_none=True)
        loss_disc.backward()
        grad_norm_d = _clip(discriminators.parameters(), config.grad_clip)
        disc_finite = bool(torch.isfinite(loss_disc)) and bool(torch.isfinite(grad_norm_d))
        values.update({"loss/disc": float(loss_disc.detach()), "grad_norm_d": float(grad_norm_d)})

    out = {"loss/mel": state.mel_loss(generated, audio), "loss/stft": state.stft_loss(generated, audio)}
    if adversarial:
        with loop.weights_held(discriminators):
            with torch.no_grad(), bf16_autocast(config.bf16, state.device, cpu=config.cpu_bf16):
                real = discriminators(audio)  # feature-matching targets, after the discriminator update
            with bf16_autocast(config.bf16, state.device, cpu=config.cpu_bf16):
                fake = discriminators(generated)
        out["loss/fm"] = feature_matching_loss(real, fake).float()
        out["loss/adv"] = generator_adversarial_loss([(logits.float(), maps) for logits, maps in fake])
    total = sum(config.lambdas.get(k, 1.0) * v for k, v in out.items())
    state.opt_g.zero_grad(set_to_none=True)
    total.backward()
    grad_norm_g = _clip(generator.parameters(), config.grad_clip)
    finite = disc_finite and bool(torch.isfinite(total)) and bool(torch.isfinite(grad_norm_g))
    # Every rank must take the same decision, or the replicas drift apart.
    finite = not any_rank(not finite, state.ctx)
    bad = [k for k, v in out.items() if not torch.isfinite(v).all()]
    apply = state.guard.check(finite, state.step, f"(non-finite: {', '.join(bad) or 'gradient'})")
    if apply:
        if adversarial:
            state.opt_d.step()
        state.opt_g.step()
    state.opt_g.zero_grad(set_to_none=True)
    state.opt_d.zero_grad(set_to_none=True)
    state.step += 1

    values.update({k: float(v.detach()) for k, v in out.items()})
    values.update({"loss/total": float(total.detach()), "grad_norm_g": float(grad_norm_g), "lr": lr_g,
                   "skipped": 0.0 if apply else 1.0})
    return values


# ------------------------------------------------------------------------------------------ set-up


def vc_mel_transform(model_dir: Path, mel_config, device: torch.device) -> MelTransform:
    """``mel -> model.convert(mel, model.embed(mel))`` for the VC model in ``model_dir`` (frozen, eval mode)."""
    from voiceconv.models.vc_model import VCModel

    model = VCModel.from_pretrained(model_dir, device=device)
    model.mel_config.check_compatible(mel_config, "VC model", "vocoder")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def transform(mel: torch.Tensor) -> torch.Tensor:
        return model.convert(mel, model.embed(mel))

    return transform


def with_reconstructions(corpus: PreparedCorpus, run: RunDirectory, config: VocoderTrainConfig, mel_config,
                         ctx: Distributed, mel_transform: MelTransform | None) -> PreparedCorpus:
    """``corpus`` as the run trains on it: with ``train.finetune_from_vc`` (or an injected
    ``mel_transform``), every mel replaced by the VC model's reconstruction, else unchanged.

    The main process writes the reconstructions (``run.vc_mels``) or finds them already written by the
    same VC model; the others wait for it (for as long as the process group's timeout allows) and stop
    with it if it fails. An injected transform has no identity to check, so it always rebuilds.
    """
    if mel_transform is None and not config.finetune_from_vc:
        return corpus
    error: Exception | None = None
    if ctx.is_main:
        try:
            if mel_transform is not None:
                reconstruct_corpus(corpus, mel_transform, run.vc_mels, made_by=None, device=ctx.device)
            else:
                from voiceconv.models.vc_model import KIND as KIND_VC

                model_dir = resolve_model_dir(config.finetune_from_vc)
                # The weights' checksum names the model; the cache is reused only for the same weights.
                made_by = read_config(model_dir, KIND_VC).get("sha256") or str(model_dir.resolve())
                logger.info("fine-tuning on reconstructions of the VC model in %s", model_dir)
                if not _reconstructions_cached(run.vc_mels, made_by, corpus):
                    transform = vc_mel_transform(model_dir, mel_config, ctx.device)
                    reconstruct_corpus(corpus, transform, run.vc_mels, made_by=made_by, device=ctx.device)
                    del transform  # frees the VC model for the rest of the run
                else:
                    logger.info("reusing the reconstructed mels in %s", run.vc_mels)
        except Exception as exc:  # noqa: BLE001 -- re-raised below, after the other ranks are told
            error = exc
    if any_rank(error is not None, ctx):  # also the barrier the other ranks wait at
        if error is not None:
            raise error
        raise TrainingError("the main process failed to reconstruct the mels; see its log")
    return corpus.with_mels(run.vc_mels)


def _reconstructions_cached(path: Path, made_by: str, corpus: PreparedCorpus) -> bool:
    record = path.with_suffix(".json")
    if not (path.is_file() and record.is_file()):
        return False
    saved = json.loads(record.read_text())
    return (saved.get("made_by") == made_by and saved.get("utterances") == len(corpus)
            and np.load(path, mmap_mode="r").shape == corpus.mels.shape)


def reconstruct_corpus(corpus: PreparedCorpus, transform: MelTransform, path: Path, made_by: str | None,
                       device: torch.device) -> None:
    """Write ``transform`` of every whole utterance of ``corpus`` to ``path`` (float16, the layout of
    ``mels.npy``: frames as rows), with a record of ``made_by`` beside it (``path.with_suffix(".json")``).

    Whole utterances, not training segments: the VC model's instance norm and speaker vector then see
    what they see in a conversion, where a 32-frame segment would give them a third of a second. The
    record goes first and comes back last, so an interrupted rebuild is never taken for a finished one.
    """
    record = path.with_suffix(".json")
    record.unlink(missing_ok=True)
    logger.info("reconstructing %d utterances into %s", len(corpus), path)
    with atomic_path(path, suffix=".npy") as temp:
        out = np.lib.format.open_memmap(temp, mode="w+", dtype=np.float16, shape=corpus.mels.shape)
        with torch.no_grad():
            for index, utterance in enumerate(corpus.utterances):
                mel = torch.from_numpy(corpus.mel(index)).to(device).unsqueeze(0)  # (1, n_mels, T)
                rebuilt = transform(mel)[0].float().cpu()  # (n_mels, T)
                if rebuilt.shape != mel.shape[1:]:
                    raise ConfigError(f"the mel transform changed {utterance.utterance_id}'s shape "
                                      f"{tuple(mel.shape[1:])} to {tuple(rebuilt.shape)}")
                # mels.npy stores frames as rows: (T, n_mels).
                out[utterance.frame_offset : utterance.frame_offset + utterance.n_frames] = rebuilt.T.numpy()
        out.flush()
        del out
    if made_by is not None:
        with atomic_path(record) as temp:
            temp.write_text(json.dumps({"made_by": made_by, "utterances": len(corpus)}) + "\n")


def _weight_shaping(config: dict) -> dict:
    """A vocoder config without what has no weights: ``istft.consistency_iters`` (a generator trained
    through 16 phase-refinement iterations may be fine-tuned with fewer; issue 13) and ``inference_dtype``."""
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in config.items()}
    config.pop("inference_dtype", None)
    if isinstance(config.get("istft"), dict):
        config["istft"].pop("consistency_iters", None)
    return config


def load_generator_weights(vocoder: Vocoder, directory: str | Path) -> None:
    """Start from another vocoder's generator weights (same generator config), keeping weight norm trainable."""
    meta, state_dict = load_pretrained(directory, kind=KIND)
    saved = _weight_shaping(VocoderConfig.from_dict(meta["config"]).to_dict())
    ours = _weight_shaping(vocoder.config.to_dict())
    if saved != ours:
        raise ConfigError(f"{directory}: its vocoder config differs from this run's model section "
                          f"(saved {saved} vs run {ours}); use the same model config to fine-tune it")
    if isinstance(vocoder.generator, HiFiGANGenerator):
        vocoder.generator.load_jik876_state_dict(state_dict)
    else:
        vocoder.load_generator_state(state_dict, source=str(directory))
    logger.info("generator initialised from %s", directory)


@dataclass
class ValidationSet:
    """Fixed held-out utterances: ``mels[i] (n_mels, T_i)`` and ``audios[i] (T_i * hop,)``."""

    mels: list[torch.Tensor]
    audios: list[torch.Tensor]

    @classmethod
    def build(cls, corpus: PreparedCorpus, indices: list[int], max_frames: int) -> ValidationSet:
        mels, audios = [], []
        for index in indices:
            n_frames = min(corpus.utterances[index].n_frames, max_frames)
            mels.append(torch.from_numpy(corpus.mel(index, 0, n_frames)))
            audios.append(torch.from_numpy(corpus.audio(index, 0, n_frames)))
        return cls(mels, audios)


def split_validation(corpus: PreparedCorpus, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """Deterministically hold out ``n_val`` utterances (at most a quarter of the corpus)."""
    n_val = min(n_val, len(corpus) // 4)
    order = np.random.default_rng(seed).permutation(len(corpus))
    held = sorted(int(i) for i in order[:n_val])
    return [i for i in range(len(corpus)) if i not in set(held)], held


@torch.no_grad()
def validate(vocoder: Vocoder, val: ValidationSet, device: torch.device) -> tuple[dict[str, float], list[torch.Tensor]]:
    """``val/mel_l1`` and ``val/mrstft`` of the vocoder's resynthesis of each held-out utterance."""
    vocoder.eval()
    mel_l1, mrstft, outputs = [], [], []
    for mel, audio in zip(val.mels, val.audios):
        mel = mel.to(device).unsqueeze(0)  # (1, n_mels, T)
        output = vocoder(mel)[0].float().clamp(-1, 1).cpu()  # (T * hop,)
        outputs.append(output)
        mel_l1.append(log_mel_l1(audio, output, vocoder.mel_config))
        mrstft.append(multi_resolution_stft_distance(audio, output))
    return {"val/mel_l1": float(np.mean(mel_l1)), "val/mrstft": float(np.mean(mrstft))}, outputs


def build_state(experiment: VocoderExperiment, ctx: Distributed) -> State:
    """Networks, optimizers and losses with identical initial weights on every rank."""
    config = experiment.train
    seed_everything(config.seed)
    vocoder = Vocoder(experiment.model).to(ctx.device)
    if config.init_from:
        load_generator_weights(vocoder, config.init_from)
    discriminators = Discriminators(config.discriminator).to(ctx.device)
    seed_everything(config.seed * 1000 + ctx.rank)
    generator, wrapped_d = vocoder, discriminators
    if ctx.enabled:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        generator = torch.nn.parallel.DistributedDataParallel(vocoder, device_ids=device_ids)
        wrapped_d = torch.nn.parallel.DistributedDataParallel(discriminators, device_ids=device_ids)
    betas = tuple(config.betas)
    opt_g = torch.optim.AdamW(vocoder.parameters(), config.lr_g, betas=betas, weight_decay=config.weight_decay)
    opt_d = torch.optim.AdamW(discriminators.parameters(), config.lr_d, betas=betas,
                              weight_decay=config.weight_decay)
    return State(generator, wrapped_d, opt_g, opt_d, config, ctx, NanGuard(config.max_bad_steps),
                 MelLoss(experiment.model.mel).to(ctx.device),
                 MultiResolutionSTFTLoss(config.stft_resolutions).to(ctx.device))


# ------------------------------------------------------------------------------------------- loop


def train(
    experiment: VocoderExperiment,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    mel_transform: MelTransform | None = None,
) -> dict[str, float]:
    """Train (or resume) a vocoder run in ``out_dir`` on the prepared corpus ``data_dir``; returns the last scalars.

    ``mel_transform`` replaces every utterance's input mel, applied once to whole utterances (tests
    inject one; ``train.finetune_from_vc`` builds it from a VC model).
    """
    config = experiment.train
    if experiment.model.generator == "griffin_lim":
        raise ConfigError("model.generator=griffin_lim has nothing to train; choose istft or hifigan")
    with process_group(device, config.num_threads) as ctx:
        return _train(experiment, data_dir, RunDirectory(out_dir), resume, ctx, progress, mel_transform)


def _train(experiment: VocoderExperiment, data_dir, run: RunDirectory, resume: bool, ctx: Distributed,
           progress: bool, mel_transform: MelTransform | None) -> dict[str, float]:
    config = experiment.train
    corpus = open_run(run, experiment, data_dir, resume, ctx, "vocoder config")
    corpus = with_reconstructions(corpus, run, config, experiment.model.mel, ctx, mel_transform)
    train_indices, val_indices = split_validation(corpus, config.n_val_utterances, config.seed)
    batcher = SegmentBatcher(corpus, config.segment_frames, config.batch_size // ctx.world_size, config.seed,
                             train_indices, ctx.rank, ctx.world_size, with_audio=True)
    state = build_state(experiment, ctx)
    if resume:
        loop.restore(state, run)
        # A resumed run may change hyperparameters; the config wins (the lr is set from the step anyway).
        for optimizer in (state.opt_g, state.opt_d):
            for group in optimizer.param_groups:
                group.update(betas=tuple(config.betas), weight_decay=config.weight_decay)
    vocoder = unwrap(state.generator)
    if ctx.is_main:
        write_run_config(run, experiment)
        logger.info("vocoder (%s): %.3f M generator parameters, %.3f M discriminator parameters; %d training "
                    "utterances, %d held out; device %s x %d process(es)", experiment.model.generator,
                    vocoder.n_parameters() / 1e6,
                    sum(p.numel() for p in state.discriminators.parameters()) / 1e6,
                    len(train_indices), len(val_indices), ctx.device, ctx.world_size)
    barrier(ctx)

    log = RunLogger(run, enabled=ctx.is_main, start_step=state.step)
    val = ValidationSet.build(corpus, val_indices, config.val_max_frames) if ctx.is_main and val_indices else None
    baseline_logged = []  # Griffin-Lim's scores are logged once per process, at the first validation

    def validate_once() -> dict[str, float]:
        scores = _validate_and_log(vocoder, val, state, log, with_baseline=not baseline_logged)
        baseline_logged.append(True)
        return scores

    return run_loop(
        state, log, experiment, batch=batcher.batch, train_step=train_step,
        validate=validate_once if val is not None else None, best_key="val/mel_l1", desc="train-vocoder",
        progress=progress)


def _validate_and_log(vocoder: Vocoder, val: ValidationSet, state: State, log: RunLogger,
                      with_baseline: bool) -> dict[str, float]:
    scores, outputs = validate(vocoder, val, state.device)
    sample_rate = vocoder.sample_rate
    if with_baseline:
        # Griffin-Lim on the same input: the bar a neural vocoder has to clear (logged once per process).
        griffin_lim = Vocoder.griffin_lim(vocoder.mel_config, device=state.device)
        baseline = validate(griffin_lim, val, state.device)[0]
        scores.update({f"{k}_griffin_lim": v for k, v in baseline.items()})
    log.scalars(scores, state.step)
    logger.info("step %d: %s", state.step, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    for i in range(min(state.config.n_audio_samples, len(outputs))):
        log.audio(f"audio/generated_{i}", outputs[i], state.step, sample_rate)
        if with_baseline:
            log.audio(f"audio/real_{i}", val.audios[i], state.step, sample_rate)
    vocoder.train()
    return scores
