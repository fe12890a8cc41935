"""Train a voice conversion model: one plain PyTorch loop, resumable, DDP under torchrun.

Single process (CUDA when available, else CPU)::

    voiceconv train --config voiceconv/conf/adain_vc.yaml --data prepared/ --out runs/adain_vc

Resume after a crash or to train longer (the config is read back from ``runs/adain_vc/config.yaml``)::

    voiceconv train --out runs/adain_vc --data prepared/ --resume train.steps=300000

The resumed run is bit-identical to an uninterrupted one on the same hardware (data order, noise and
augmentation are functions of the seed and step; RNG and optimizer state are restored). Ctrl-C in a
single process saves a resume point first; a killed process resumes from the last checkpoint.

Several processes on one machine (gloo on CPU, nccl on GPUs; ``train.batch_size`` is the global
batch, split evenly over the processes)::

    torchrun --standalone --nproc_per_node 2 -m voiceconv.cli train --config CONF --data prepared/ --out RUN

How a step works: :class:`SegmentBatcher` returns a batch that depends only on ``(seed, step,
rank)``; the model's ``forward`` returns a dict with ``loss/*`` terms and ``metric/*`` statistics;
the loss is ``sum(lambdas[k] * ramp_k(step) * out[k])`` over every ``loss/*`` key present (so an
optional module, e.g. a quantizer, only adds keys and never needs a branch here). Every ``loss/*``
and ``metric/*`` goes to TensorBoard and ``metrics.jsonl`` under its own name.

Layout of the run directory (see :class:`voiceconv.training.run_directory.RunDirectory`): ``config.yaml``,
``train_state.pt`` (model, optimizer, step, RNG of every rank; read with ``weights_only=True``),
``last/`` and ``best/`` (lowest ``val/rec``) and ``checkpoints/step_XXXXXXX/`` (newest K), each a
released-format model directory that ``VCModel.from_pretrained`` and ``voiceconv convert`` load.

Why this module is over 400 lines: it is the VC model's whole trainer (config, losses and channel
corruption, warm start, mel statistics, validation of reconstruction and conversion, set-up), all of
it specific to this model; the loop, checkpoints and logs are shared in :mod:`voiceconv.training.loop`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voiceconv.config import to_dict
from voiceconv.errors import ConfigError, TrainingError
from voiceconv.models.phone_recognizer import PhoneRecognizer
from voiceconv.models.speaker_critic import SpeakerCritic
from voiceconv.models.vc_model import VCConfig, VCModel
from voiceconv.training import loop
from voiceconv.training.augment import AugmentConfig, augment_batch, n_virtual_speakers
from voiceconv.training.channel import ChannelConfig, corrupt
from voiceconv.training.content_warp import ContentWarpConfig, warp_content
from voiceconv.training.cycle import CycleConfig, draw_partners
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import Distributed, any_rank, barrier, seed_everything, unwrap
from voiceconv.training.mel_adversary import (
    MelAdversaryConfig,
    build_discriminator,
    discriminator_step,
    generator_terms,
)
from voiceconv.training.phonetic import PhoneticTermConfig, phonetic_loss
from voiceconv.training.run_directory import RunDirectory, RunLogger
from voiceconv.training.speaker_critic import SpeakerCriticTermConfig, critic_loss
from voiceconv.training.speaker_invariance import SpeakerInvarianceConfig, invariance_pair

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 200_000  # AdaIN-VC iters
    batch_size: int = 128  # AdaIN-VC batch_size; global over all DDP processes
    segment_frames: int = 128  # AdaIN-VC segment_size (1.5 s at 22.05 kHz / hop 256)
    lr: float = 5e-4  # AdaIN-VC optimizer.lr
    # Cosine decay of lr to lr * final_lr_ratio at `steps`; 1 keeps it constant, as AdaIN-VC does.
    # The rate is a function of the step and `steps`, so a resume is exact unless `steps` changes.
    final_lr_ratio: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)  # AdaIN-VC beta1, beta2
    amsgrad: bool = True  # AdaIN-VC optimizer.amsgrad
    weight_decay: float = 1e-4  # AdaIN-VC optimizer.weight_decay (L2, as in torch.optim.Adam)
    grad_clip: float = 5.0  # AdaIN-VC optimizer.grad_norm; <= 0 disables clipping
    # Weight of every loss/* key the model returns; AdaIN-VC lambda_rec 10, lambda_kl 1.
    lambdas: dict[str, float] = field(default_factory=lambda: {"loss/rec": 10.0, "loss/kl": 1.0})
    # Linear 0 -> 1 ramp of a loss weight over N steps; AdaIN-VC annealing_iters 20000 for the KL term.
    warmup: dict[str, int] = field(default_factory=lambda: {"loss/kl": 20_000})
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU); Ampere+ GPUs gain ~2x with no loss scaling
    log_every: int = 100  # scalars (averaged over the interval) to TensorBoard and metrics.jsonl
    val_every: int = 2_000  # validation on held-out speakers, mel images and audio
    checkpoint_every: int = 5_000  # last/, checkpoints/step_XXXXXXX/ and train_state.pt
    keep_checkpoints: int = 3  # newest periodic checkpoints kept; <= 0 keeps all
    n_val_speakers: int = 10  # speakers held out for validation (AdaIN-VC held out 20 of VCTK's 109 for testing)
    val_utterances: int = 4  # utterances per held-out speaker in the validation set
    val_max_frames: int = 512  # validation utterances are cut to this many frames (~6 s) to bound the cost
    norm_utterances: int = 2_000  # utterances sampled to estimate the per-bin mel mean and std
    seed: int = 0  # model init, data order and noise; the same seed replays the same run
    max_bad_steps: int = 20  # abort after this many consecutive steps with a non-finite loss or gradient
    augment: AugmentConfig | None = None  # mel augmentation of the training input (None: off, as in AdaIN-VC)
    # Recording-channel corruption (EQ, band limit, reverberation, noise) of the encoders' inputs,
    # the clean mel staying the target: a de-noising auto-encoder (None: off, as in AdaIN-VC).
    channel: ChannelConfig | None = None
    # A random frequency warp of the content encoder's input only (voiceconv/training/content_warp.py),
    # so that the decoder takes the voice from the speaker vector (None: off, as in AdaIN-VC).
    content_warp: ContentWarpConfig | None = None
    # Convert part of each batch to another utterance's voice and back, rebuilding the original
    # (voiceconv/training/cycle.py; weight lambdas["loss/cycle"]). None: off, as in AdaIN-VC.
    cycle: CycleConfig | None = None
    # Pull the speaker vector of a reference through a random channel toward that of the same clean
    # reference (voiceconv/training/speaker_invariance.py; weight lambdas["loss/speaker_invariance"]).
    speaker_invariance: SpeakerInvarianceConfig | None = None
    # A frozen speaker verifier of our own scores the cycle's conversions against their target voices
    # (voiceconv/training/speaker_critic.py; weight lambdas["loss/speaker_critic"]; needs train.cycle).
    speaker_critic: SpeakerCriticTermConfig | None = None
    # A frozen phone recogniser of our own reads the cycle's conversions and their sources, which must
    # agree (voiceconv/training/phonetic.py; weight lambdas["loss/phonetic"]; needs train.cycle).
    phonetic: PhoneticTermConfig | None = None
    # A mel discriminator trained beside the model; the decoder's reconstructions (and the cycle's conversions)
    # must fool it (voiceconv/training/mel_adversary.py; weights lambdas["loss/mel_adv"] and ["loss/mel_fm"]).
    mel_adversary: MelAdversaryConfig | None = None
    # The speaker encoder reads another segment of the same speaker, not the segment being rebuilt
    # (AdaIN-VC: the same segment), so the speaker vector cannot carry what is said.
    separate_reference: bool = False
    cpu_bf16: bool = False  # bf16 autocast on the CPU too (about 1.9x faster steps on AVX-512 BF16 CPUs)
    # Warm start: a released VC model directory whose weights and mel statistics initialise the run
    # (the optimizer starts fresh). Its architecture must equal the config's model section.
    init_from: str | None = None
    num_threads: int | None = None  # torch CPU threads per process; None keeps torch's default

    def __post_init__(self) -> None:
        loop.check_schedule(self)
        if self.speaker_critic is not None and self.cycle is None:
            raise ConfigError("train.speaker_critic judges the cycle's conversions; set train.cycle too")
        if self.mel_adversary is not None and self.mel_adversary.conversions and self.cycle is None:
            raise ConfigError("train.mel_adversary.conversions judges the cycle's conversions; set train.cycle too, "
                              "or mel_adversary.conversions false")
        if self.phonetic is not None and self.cycle is None:
            raise ConfigError("train.phonetic reads the cycle's conversions; set train.cycle too")
        if self.phonetic is not None and self.speaker_critic is not None and not self.speaker_critic.content_gradient:
            # Both terms read the same conversion, which is then decoded from the detached content code.
            raise ConfigError("train.phonetic reads the conversion that train.speaker_critic judges; with "
                              "speaker_critic.content_gradient false it would not reach the content encoder "
                              "either. Set content_gradient true, or leave one of the two terms out")


@dataclass
class State(loop.TrainingState):
    """Everything that changes during training."""

    model: torch.nn.Module  # wrapped in DistributedDataParallel when world_size > 1
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    ctx: Distributed
    guard: loop.NanGuard
    step: int = 0
    best_val: float = math.inf
    critic: SpeakerCritic | None = None  # frozen, loaded from train.speaker_critic.path (not in train_state)
    recognizer: PhoneRecognizer | None = None  # frozen, loaded from train.phonetic.path (not in train_state)
    # train.mel_adversary: trained beside the model and kept in train_state (DDP-wrapped like the model)
    discriminator: torch.nn.Module | None = None
    discriminator_optimizer: torch.optim.Optimizer | None = None

    def trained_modules(self) -> dict[str, torch.nn.Module]:
        modules = {"model": self.model}
        if self.discriminator is not None:
            modules["mel_discriminator"] = self.discriminator
        return modules

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"optimizer": self.optimizer}
        if self.discriminator_optimizer is not None:
            optimizers["mel_discriminator_optimizer"] = self.discriminator_optimizer
        return optimizers

    def released(self) -> VCModel:
        return unwrap(self.model)


EXAMPLE_CONFIG = "voiceconv/conf/adain_vc.yaml"  # named in the CLI's error when --config is missing
ExperimentConfig = loop.experiment_config("ExperimentConfig", __name__, VCConfig, TrainConfig)


load_experiment = ExperimentConfig.load  # (path, overrides) -> ExperimentConfig


def loss_weights(config: TrainConfig, keys, step: int) -> dict[str, float]:
    """``lambdas[k] * ramp_k(step)`` for every ``loss/*`` key; a key without a lambda weighs 1."""
    return {k: config.lambdas.get(k, 1.0) * loop.linear_ramp(step, config.warmup.get(k, 0)) for k in keys}


def _step_generator(state: State, stream: int) -> torch.Generator:
    # A generator seeded from the step, like the batcher, keeps resumption exact with no extra state.
    return torch.Generator().manual_seed(int(np.random.SeedSequence(
        [state.config.seed, state.step, state.ctx.rank, stream]).generate_state(1)[0]))


def _augment(batch: dict[str, torch.Tensor], state: State) -> dict[str, torch.Tensor]:
    """Gain / VTLP augmentation (``train.augment``); the draws depend only on (seed, step, rank)."""
    config = state.config.augment
    if config is None:
        return batch
    return augment_batch(batch, config, _step_generator(state, 1), unwrap(state.model).mel_config.log_clamp)


def _encoder_inputs(batch: dict[str, torch.Tensor], state: State) -> dict[str, Any]:
    """The model's ``content_mel`` / ``speaker_mel`` / ``speaker_mask`` (``train.channel``,
    ``train.content_warp``, ``train.separate_reference``) and ``invariance`` (``train.speaker_invariance``);
    empty when all are off, so the model reads ``mel`` itself. The reconstruction target is always the
    clean ``mel``."""
    config = state.config
    inputs: dict[str, Any] = {}  # tensors, and the invariance tuple
    speaker_mel, speaker_mask = batch["mel"], batch["mask"]
    if "ref_mel" in batch:
        speaker_mel, speaker_mask = batch["ref_mel"], batch["ref_mask"]
        inputs.update(speaker_mel=speaker_mel, speaker_mask=speaker_mask)
    content_mel = batch["mel"]
    if config.content_warp is not None:
        # Only the content path is warped: the speaker encoder must still hear the true voice.
        content_mel = warp_content(content_mel, config.content_warp, _step_generator(state, 3),
                                   log_floor=math.log(unwrap(state.model).mel_config.log_clamp))
        inputs["content_mel"] = content_mel
    if config.speaker_invariance is not None:
        # From the clean reference, before train.channel: the anchor must be the uncorrupted voice.
        inputs["invariance"] = invariance_pair(speaker_mel, speaker_mask, config.speaker_invariance,
                                               _step_generator(state, 5), unwrap(state.model).mel_config)
    if config.channel is not None:
        # Independent channels for the two encoders: the speaker vector must not depend on the room
        # and microphone either, and the decoder must rebuild the clean mel from both.
        generator = _step_generator(state, 2)
        mel_config = unwrap(state.model).mel_config
        inputs["content_mel"] = corrupt(content_mel, config.channel, generator, mel_config, batch["mask"])
        inputs["speaker_mel"] = corrupt(speaker_mel, config.channel, generator, mel_config, speaker_mask)
        inputs["speaker_mask"] = speaker_mask
    return inputs


def train_step(state: State, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimizer step on ``batch`` (``mel (B, n_mels, S)``, ``speaker (B,)``, ``mask (B, S)``).

    Returns every ``loss/*`` (unweighted) and ``metric/*`` value of the model, the weighted
    ``loss/total``, the pre-clipping ``grad_norm``, ``lr``, ``weight/<loss key>`` for losses that
    are still ramping up, and ``skipped`` (1 when the update was dropped because the loss or a
    gradient was not finite).
    """
    model, config = state.model, state.config
    model.train()
    batch = _augment({k: v.to(state.device, non_blocking=True) for k, v in batch.items()}, state)
    inputs = _encoder_inputs(batch, state)
    if config.cycle is not None:
        inputs["cycle_partner"] = draw_partners(batch["mel"].shape[0], config.cycle,
                                                _step_generator(state, 4)).to(state.device)
        inputs["cycle_detach"] = config.cycle.detach_conversion
        inputs["cycle_code"] = config.cycle.code_consistency
        if config.speaker_critic is not None:
            inputs["critic_content_gradient"] = config.speaker_critic.content_gradient
            inputs["critic_decoder_gradient"] = config.speaker_critic.decoder_gradient
    with loop.bf16_autocast(state.config.bf16, state.device, cpu=state.config.cpu_bf16):
        out = model(batch["mel"], speaker_ids=batch["speaker"], mask=batch["mask"], step=state.step, **inputs)
        if state.critic is not None or state.recognizer is not None:
            partner = inputs["cycle_partner"]
            n = partner.numel()
            converted = unwrap(model).denormalize(out["cycle_converted"])  # raw log-mel (n, n_mels, T)
        if state.critic is not None:
            # Decoded with the decoder's weights held (all, or all but the AdaIN projections) when
            # speaker_critic.decoder_gradient is not true.
            judged = unwrap(model).denormalize(out["critic_converted"]) if "critic_converted" in out else converted
            out["loss/speaker_critic"] = critic_loss(state.critic, judged, batch["mel"][partner],
                                                     batch["mask"][:n], batch["mask"][partner],
                                                     cap_large_gaps=config.speaker_critic.cap_large_gaps)
        if state.recognizer is not None:
            # Conversion i keeps utterance i's timing: frame t of each is read against the other.
            out["loss/phonetic"] = phonetic_loss(state.recognizer, converted, batch["mel"][:n], batch["mask"][:n])
    adversary_values = _mel_adversary(state, batch, out)
    loss_keys = sorted(k for k in out if k.startswith("loss/"))
    if not loss_keys:
        raise TrainingError("the model returned no 'loss/*' terms; nothing to train")
    weights = loss_weights(config, loss_keys, state.step)
    total = sum(weights[k] * out[k].float() for k in loss_keys)

    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    for group in state.optimizer.param_groups:
        group["lr"] = loop.cosine_decay(config.lr, state.step, config.steps, config.final_lr_ratio)
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
    finite = bool(torch.isfinite(total)) and bool(torch.isfinite(grad_norm))
    # A discriminator that went non-finite skips this step too, so that it counts toward max_bad_steps.
    finite = finite and not adversary_values.get("skipped_mel_disc", 0.0)
    # Every rank must take the same decision, or the replicas drift apart.
    finite = not any_rank(not finite, state.ctx)
    bad = [k for k in loss_keys if not torch.isfinite(out[k]).all()]
    apply = state.guard.check(finite, state.step, f"(non-finite: {', '.join(bad) or 'gradient'})")
    if apply:
        state.optimizer.step()
    else:
        state.optimizer.zero_grad(set_to_none=True)
    state.step += 1

    values = {k: float(out[k].detach().float()) for k in out if k.startswith(("loss/", "metric/"))}
    values.update({f"weight/{k}": w for k, w in weights.items() if config.warmup.get(k, 0) > 0})
    values.update({"loss/total": float(total.detach()), "grad_norm": float(grad_norm),
                   "lr": state.optimizer.param_groups[0]["lr"], "skipped": 0.0 if apply else 1.0})
    values.update(adversary_values)
    return values


def _mel_adversary(state: State, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> dict[str, float]:
    """``train.mel_adversary``: update the discriminator on this step's outputs, then add the decoder's
    ``loss/mel_adv`` (and ``loss/mel_fm``) to ``out``; returns the discriminator's scalars (empty when off)."""
    config = state.config.mel_adversary
    if config is None:
        return {}
    model = unwrap(state.model)
    real = model.normalize(batch["mel"])  # the discriminator reads the model's normalised domain
    reconstruction = model.normalize(out["mel_hat"])
    conversions = out.get("cycle_converted") if config.conversions else None
    values = discriminator_step(state.discriminator, state.discriminator_optimizer, config, real, reconstruction,
                                conversions, batch["mask"], agree=lambda finite: not any_rank(not finite, state.ctx))
    # The wrapped discriminator synchronises its update across processes; the decoder's terms only read it.
    out.update(generator_terms(unwrap(state.discriminator), config, real, reconstruction, conversions, batch["mask"]))
    return values


# ------------------------------------------------------------------------------------------ set-up


def compute_normalization(corpus: PreparedCorpus, indices: list[int], max_utterances: int,
                          seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std ``(n_mels,)`` of the log-mels of (a sample of) the training utterances."""
    rng = np.random.default_rng(seed)
    chosen = indices if len(indices) <= max_utterances else rng.choice(indices, max_utterances, replace=False)
    n_mels = corpus.mel_config.n_mels
    total, total_sq, count = np.zeros(n_mels), np.zeros(n_mels), 0
    for index in chosen:
        mel = corpus.mel(int(index)).astype(np.float64)  # (n_mels, T)
        total += mel.sum(axis=1)
        total_sq += (mel**2).sum(axis=1)
        count += mel.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-8))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def warm_start(model: VCModel, directory: str | Path, model_config: VCConfig) -> None:
    """Copy the weights and mel statistics of the released model in ``directory`` into ``model``.

    The two architectures must be equal (the config's ``model`` section against the directory's
    ``config.json``); parts the released model lacks (a new speaker classifier) keep their
    initialisation. Raises ``ConfigError`` naming the differing keys otherwise.
    """
    source = VCModel.from_pretrained(directory, device="cpu")
    ours, theirs = _flatten(to_dict(model_config)), _flatten(to_dict(source.config))
    differing = sorted(k for k in set(ours) | set(theirs)
                       if ours.get(k) != theirs.get(k) and not k.startswith("speaker_classifier"))
    if differing:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differing[:6])
        raise ConfigError(f"train.init_from={directory}: its architecture differs from the config's model "
                          f"section ({shown}); set the model section to the released model's config.json")
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("speaker_classifier.")]
    if missing or unexpected:
        raise ConfigError(f"train.init_from={directory}: weights do not fit (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas),
                            weight_decay=config.weight_decay, amsgrad=config.amsgrad)


@dataclass
class ValidationSet:
    """Fixed held-out utterances: ``mels[i] (n_mels, T_i)`` of ``speakers[i]``."""

    mels: list[torch.Tensor]
    speakers: list[str]

    @classmethod
    def build(cls, corpus: PreparedCorpus, speakers: list[str], per_speaker: int, max_frames: int) -> ValidationSet:
        mels, names = [], []
        for speaker in speakers:
            for index in corpus.indices_for([speaker])[:per_speaker]:
                n_frames = min(corpus.utterances[index].n_frames, max_frames)
                mels.append(torch.from_numpy(corpus.mel(index, 0, n_frames)))
                names.append(speaker)
        return cls(mels, names)


@torch.no_grad()
def validate(model: VCModel, val: ValidationSet, device: torch.device) -> tuple[dict[str, float], dict]:
    """Reconstruction L1 and speaker-conversion gain on held-out speakers.

    ``val/rec``: mean absolute error (log-mel units) of ``convert(mel, embed(mel))``, the inference
    path. Conversion: each utterance is converted to the next held-out speaker (cyclically), whose
    target vector is the mean of that speaker's embeddings; ``val/sim_converted`` is the cosine
    similarity of the converted mel's embedding to the target, ``val/sim_source`` that of the
    unconverted source, and ``val/conversion_gain`` their difference (> 0: the conversion moves
    toward the target in the model's own speaker space). Returns the scalars and example mels.
    """
    model.eval()
    embeddings, recs = [], []
    for mel in val.mels:
        mel = mel.to(device).unsqueeze(0)  # (1, n_mels, T)
        speaker = model.embed(mel)
        embeddings.append(speaker[0])
        recs.append((model.convert(mel, speaker) - mel).abs().mean().item())
    values = {"val/rec": float(np.mean(recs))}
    examples = {"source": val.mels[0], "reconstruction": model.convert(val.mels[0].to(device)[None],
                                                                       embeddings[0][None])[0].cpu()}
    names = sorted(set(val.speakers))
    if len(names) >= 2:
        centroid = {s: torch.stack([e for e, n in zip(embeddings, val.speakers) if n == s]).mean(0) for s in names}
        converted_sims, source_sims = [], []
        for i, (mel, speaker) in enumerate(zip(val.mels, val.speakers)):
            target = centroid[names[(names.index(speaker) + 1) % len(names)]]
            converted = model.convert(mel.to(device)[None], target[None])  # (1, n_mels, T)
            converted_sims.append(torch.cosine_similarity(model.embed(converted)[0], target, dim=0).item())
            source_sims.append(torch.cosine_similarity(embeddings[i], target, dim=0).item())
            if i == 0:
                examples["conversion"] = converted[0].cpu()
        values["val/sim_converted"] = float(np.mean(converted_sims))
        values["val/sim_source"] = float(np.mean(source_sims))
        values["val/conversion_gain"] = values["val/sim_converted"] - values["val/sim_source"]
    return values, examples


def _load_vocoder(vocoder_dir: str | Path | None, mel_config):
    """The vocoder for TensorBoard audio: ``vocoder_dir``, else Griffin-Lim; None when unavailable."""
    try:
        from voiceconv.vocoder.model import Vocoder
    except ImportError:
        logger.warning("voiceconv.vocoder is not available; TensorBoard gets mel images but no audio")
        return None
    if vocoder_dir:
        vocoder = Vocoder.from_pretrained(vocoder_dir, device="cpu")
        mel_config.check_compatible(vocoder.mel_config, "VC model", "vocoder")
        return vocoder
    return Vocoder.griffin_lim(mel_config)


# ------------------------------------------------------------------------------------------- loop


def train(experiment: ExperimentConfig, data_dir: str | Path, out_dir: str | Path, *, resume: bool = False,
          device: str | torch.device | None = None, vocoder_dir: str | Path | None = None,
          progress: bool = True) -> dict[str, float]:
    """Train (or resume) a run in ``out_dir`` on the prepared corpus ``data_dir``; returns the last scalars."""
    with loop.process_group(device, experiment.train.num_threads) as ctx:
        return _train(experiment, data_dir, RunDirectory(out_dir), resume, ctx, vocoder_dir, progress)


def _train(experiment: ExperimentConfig, data_dir, run: RunDirectory, resume: bool, ctx: Distributed,
           vocoder_dir, progress: bool) -> dict[str, float]:
    config = experiment.train
    corpus = loop.open_run(run, experiment, data_dir, resume, ctx, "model config")
    train_speakers, val_speakers = corpus.split_speakers(config.n_val_speakers, config.seed)
    if len(train_speakers) < 2:
        raise ConfigError(f"{data_dir}: {len(corpus.speakers)} speakers leave {len(train_speakers)} for training "
                          f"after holding out train.n_val_speakers={config.n_val_speakers}; need >= 2")
    train_indices = corpus.indices_for(train_speakers)
    speaker_ids = {s: k for k, s in enumerate(train_speakers)}  # classifier labels: training speakers only
    batcher = SegmentBatcher(corpus, config.segment_frames, config.batch_size // ctx.world_size, config.seed,
                             train_indices, ctx.rank, ctx.world_size, speaker_ids=speaker_ids,
                             with_reference=config.separate_reference)

    # Identical initial weights on every rank (DDP also broadcasts them), then per-rank noise.
    seed_everything(config.seed)
    n_classes = len(train_speakers) if config.augment is None else n_virtual_speakers(len(train_speakers),
                                                                                    config.augment)
    model = VCModel(experiment.model, n_speakers=n_classes).to(ctx.device)
    if not resume and config.init_from:
        # The warm start's own mel statistics are kept: its weights were trained on inputs scaled by them.
        warm_start(model, config.init_from, experiment.model)
        logger.info("initialised from %s", config.init_from)
    elif not resume:
        mean, std = compute_normalization(corpus, train_indices, config.norm_utterances, config.seed)
        model.set_normalization(mean.to(ctx.device), std.to(ctx.device))
    seed_everything(config.seed * 1000 + ctx.rank)
    wrapped = model
    if ctx.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    state = State(wrapped, _optimizer(model, config), config, ctx, loop.NanGuard(config.max_bad_steps))
    if config.mel_adversary is not None:
        discriminator, state.discriminator_optimizer = build_discriminator(config.mel_adversary, ctx.device)
        state.discriminator = discriminator if not ctx.enabled else torch.nn.parallel.DistributedDataParallel(
            discriminator, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if config.speaker_critic is not None:
        state.critic = SpeakerCritic.from_pretrained(config.speaker_critic.path, device=ctx.device)
        state.critic.config.mel.check_compatible(corpus.mel_config, "speaker critic", "prepared corpus")
    if config.phonetic is not None:
        state.recognizer = PhoneRecognizer.from_pretrained(config.phonetic.path, device=ctx.device)
        state.recognizer.config.mel.check_compatible(corpus.mel_config, "phone recogniser", "prepared corpus")
    if resume:
        loop.restore(state, run)
        # A resumed run may change hyperparameters (e.g. a lower lr); the config wins over the saved state.
        for group in state.optimizer.param_groups:
            group.update(lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        if state.discriminator_optimizer is not None:
            for group in state.discriminator_optimizer.param_groups:
                group.update(lr=config.mel_adversary.lr, betas=tuple(config.mel_adversary.betas))
    if ctx.is_main:
        loop.write_run_config(run, experiment)
        logger.info("VCModel: %.3f M parameters; %d training speakers (%d utterances), %d held out; "
                    "device %s x %d process(es)", model.n_parameters() / 1e6, len(train_speakers),
                    len(train_indices), len(val_speakers), ctx.device, ctx.world_size)
    barrier(ctx)

    log = RunLogger(run, enabled=ctx.is_main, start_step=state.step)
    val = ValidationSet.build(corpus, val_speakers, config.val_utterances, config.val_max_frames) \
        if ctx.is_main and val_speakers else None
    vocoder = _load_vocoder(vocoder_dir, corpus.mel_config) if ctx.is_main and log.writer is not None else None
    last = loop.run_loop(
        state, log, experiment, batch=batcher.batch, train_step=train_step,
        validate=(lambda: _validate_and_log(model, val, state, log, vocoder, corpus.mel_config))
        if val is not None else None,
        best_key="val/rec", desc="train", progress=progress)
    if ctx.is_main and val is None:
        logger.warning("no held-out speakers (train.n_val_speakers=0): best/ is not written, use last/")
    return last


def _validate_and_log(model: VCModel, val: ValidationSet, state: State, log: RunLogger, vocoder,
                      mel_config) -> dict[str, float]:
    scores, examples = validate(model, val, state.device)
    log.scalars(scores, state.step)
    logger.info("step %d: %s", state.step, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    # One colour scale for all three images, so they can be compared by eye.
    vmin, vmax = float(examples["source"].min()), float(examples["source"].max())
    for name, mel in examples.items():
        log.mel(f"mel/{name}", mel, state.step, vmin, vmax)
        if vocoder is not None:
            try:
                log.audio(f"audio/{name}", vocoder.decode(mel.float().cpu()), state.step, mel_config.sample_rate)
            except Exception as error:  # audio is a convenience; never let it stop a training run
                logger.warning("could not vocode %s for TensorBoard: %s", name, error)
    model.train()
    return scores
