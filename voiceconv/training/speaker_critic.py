"""Train a speaker critic, and the VC term that asks a conversion to convince it (``train.speaker_critic``).

A conversion's output should sound like the target voice to a verifier that was trained to tell voices
apart, not only to the VC model's own speaker encoder, which cannot see the source voice that the content
code still carries (:mod:`voiceconv.models.speaker_critic`). The term reuses the cycle's conversions
(:mod:`voiceconv.training.cycle`): utterance ``i`` rendered in the voice of batch utterance
``partner[i]`` must embed, by the frozen critic, close to ``partner[i]``'s own segment:
``loss/speaker_critic = mean(1 - cos(critic(converted_i), critic(real_partner_i)))``, weighted by
``lambdas["loss/speaker_critic"]``. The gradient reaches the speaker encoder, the decoder (unless
``decoder_gradient`` is off; only its AdaIN speaker projections with ``"conditioning"``) and the content
encoder through the content code (unless ``content_gradient`` is off); never the critic.

:func:`train_critic` trains the critic on the prepared corpus's training speakers with an additive-margin
softmax, holding out speakers with the VC trainer's seeded split (a superset of a VC run's validation
speakers when the seed is the same and the run holds out no more); :func:`held_out_trials` scores those.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from voiceconv.errors import ConfigError
from voiceconv.models.speaker_critic import SpeakerCritic, SpeakerCriticConfig
from voiceconv.models.vc_model import default_device
from voiceconv.training.data import PreparedCorpus, SegmentBatcher
from voiceconv.training.distributed import seed_everything
from voiceconv.training.loop import cosine_decay

logger = logging.getLogger(__name__)


@dataclass
class SpeakerCriticTermConfig:
    path: str = ""  # a trained critic's directory (recipes/mini/local/train_speaker_critic.py)
    # False: the term reaches the decoder and the speaker encoder only, not the content encoder (the
    # conversion it judges is decoded from the detached content code; one more decoder pass per step).
    content_gradient: bool = True
    # False: the conversion it judges is decoded with the decoder's weights held (a functional pass with
    # detached parameters), so the term moves the speaker encoder (and, with content_gradient, the content
    # encoder) but never how the decoder renders a code: round 24 found the critic's lost words in the decoder.
    # "conditioning": the same held pass except for the AdaIN layers' speaker projections (``*.affine.*``:
    # their weights, which map the speaker vector to each layer's channel scale and bias, and their biases,
    # which are the same for every voice), which the term may move; the convolutions that render the
    # content code stay held. Rounds 29 (true) and 30 (false) put both the critic's similarity gain and its
    # lost words in the decoder; this asks which part of it.
    decoder_gradient: bool | Literal["conditioning"] = True
    # True: a pair whose gap (1 - cos) is larger than the batch's mean gap counts with weight mean / gap, so
    # its pull is that of a mean-sized gap and does not grow with the size of the voice change. Rounds 29-33
    # lost their words in the conversions to female voices from male ones, the largest changes; pairs at or
    # below the mean keep weight 1. False: every pair counts the same (rounds 24-33).
    cap_large_gaps: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("train.speaker_critic.path: give the directory of a trained speaker critic")


def critic_loss(critic: SpeakerCritic, converted: torch.Tensor, reference: torch.Tensor,
                converted_mask: torch.Tensor | None = None,
                reference_mask: torch.Tensor | None = None, cap_large_gaps: bool = False) -> torch.Tensor:
    """``mean(1 - cos)`` between the critic's embeddings of ``converted (n, n_mels, T)`` and of the target
    voice's real ``reference (n, n_mels, T_ref)`` (raw log-mels, masks ``(n, T)``); no gradient reaches the
    reference side. In float32, outside any autocast: the term's differences are a few thousandths.

    ``cap_large_gaps``: each gap above the batch's mean gap is weighted by ``mean / gap`` (held fixed, so only
    the gradient is scaled): such a pair adds the mean gap to the loss and pulls as hard as a mean-sized gap."""
    with torch.autocast(converted.device.type, enabled=False):
        with torch.no_grad():
            target = critic.embed(reference.float(), reference_mask)  # (n, D)
        produced = critic.embed(converted.float(), converted_mask)  # (n, D)
        gap = 1.0 - (produced * target).sum(dim=-1)  # (n,)
        if not cap_large_gaps:
            return gap.mean()
        with torch.no_grad():
            weight = (gap.mean() / gap.clamp_min(1e-8)).clamp(max=1.0)  # (n,): 1 at or below the mean
        return (weight * gap).mean()


@dataclass
class CriticTrainConfig:
    steps: int = 3000
    batch_size: int = 64
    segment_frames: int = 128  # the VC trainer's segment length: the critic judges such segments
    lr: float = 2e-3
    final_lr_ratio: float = 0.05
    margin: float = 0.2  # AM-softmax margin and scale (Wang et al. 2018)
    scale: float = 30.0
    # Held out with the VC trainer's seeded split: with the same seed, a VC run holding out N <= 10 speakers
    # (the mini recipe: 6) holds out a subset of these, so the critic never hears its validation voices.
    n_val_speakers: int = 10
    seed: int = 0
    log_every: int = 100


def train_critic(data_dir: str | Path, config: CriticTrainConfig, critic: SpeakerCritic | None = None,
                 device: str | torch.device | None = None) -> tuple[SpeakerCritic, dict, list[str]]:
    """Train ``critic`` (default: a new one, seeded) on ``data_dir``'s training speakers; returns it in eval
    mode, its first and last logged losses, and the held-out speakers. ``device`` None: CUDA if available."""
    if config.steps < 1:
        raise ConfigError(f"the critic needs at least one training step, got steps={config.steps}")
    corpus = PreparedCorpus(data_dir)
    train_speakers, val_speakers = corpus.split_speakers(config.n_val_speakers, config.seed)
    speaker_ids = {s: k for k, s in enumerate(train_speakers)}
    batcher = SegmentBatcher(corpus, config.segment_frames, config.batch_size, config.seed,
                             corpus.indices_for(train_speakers), speaker_ids=speaker_ids)
    seed_everything(config.seed)
    if critic is None:
        critic = SpeakerCritic(SpeakerCriticConfig(mel=corpus.mel_config), n_speakers=len(train_speakers))
    if critic.n_speakers != len(train_speakers):
        raise ConfigError(f"the critic has {critic.n_speakers} class centres for {len(train_speakers)} "
                          "training speakers")
    corpus.mel_config.check_compatible(critic.config.mel, "prepared corpus", "speaker critic")
    device = torch.device(device) if device is not None else default_device()
    critic = critic.to(device)
    optimizer = torch.optim.AdamW(critic.parameters(), lr=config.lr, weight_decay=1e-4)
    history: list[float] = []
    running, accuracy = [], []
    for step in range(config.steps):
        lr = cosine_decay(config.lr, step, config.steps, config.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in batcher.batch(step).items()}
        critic.train()
        embedding = critic.embed(batch["mel"], batch["mask"])
        logits = critic.logits(embedding, batch["speaker"], config.margin, config.scale)
        loss = F.cross_entropy(logits, batch["speaker"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        accuracy.append(float((logits.argmax(dim=-1) == batch["speaker"]).float().mean()))
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            history.append(float(np.mean(running)))
            logger.info("critic step %d: loss %.3f, batch accuracy %.2f, lr %.2e", step + 1, history[-1],
                        float(np.mean(accuracy)), lr)
            running, accuracy = [], []
    critic.eval()
    scores = {"loss_first": history[0], "loss_last": history[-1], "train_speakers": len(train_speakers)}
    return critic, scores, val_speakers


@torch.no_grad()
def held_out_trials(critic: SpeakerCritic, corpus: PreparedCorpus, speakers: list[str],
                    utterances_per_speaker: int = 8, max_frames: int = 512) -> tuple[list[float], list[float]]:
    """``(genuine, impostor)`` cosines of every pair among the first ``utterances_per_speaker`` utterances of
    each of ``speakers`` (each pair once; at most ``max_frames`` of each)."""
    device = next(critic.parameters()).device
    embeddings, owners = [], []
    for speaker in speakers:
        for index in corpus.indices_for([speaker])[:utterances_per_speaker]:
            n_frames = min(corpus.utterances[index].n_frames, max_frames)
            mel = torch.from_numpy(corpus.mel(index, 0, n_frames)).unsqueeze(0).to(device)  # (1, n_mels, T)
            embeddings.append(critic.embed(mel)[0])
            owners.append(speaker)
    stack = torch.stack(embeddings)
    cosines = (stack @ stack.T).cpu().numpy()
    genuine, impostor = [], []
    for i in range(len(owners)):
        for j in range(i + 1, len(owners)):
            (genuine if owners[i] == owners[j] else impostor).append(float(cosines[i, j]))
    return genuine, impostor
