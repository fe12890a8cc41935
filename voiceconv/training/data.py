"""The prepared feature cache (:class:`PreparedCorpus`, written by :mod:`voiceconv.training.prepare`) and
the speaker-balanced segment batcher.

Training reads random segments through :class:`SegmentBatcher`, whose batch for step ``s`` is a
pure function of ``(seed, s, rank)``. Resuming at step ``s`` therefore replays the exact data order
with no sampler state to save.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voiceconv.errors import VoiceconvError
from voiceconv.features import MelConfig

logger = logging.getLogger(__name__)


@dataclass
class Utterance:
    utterance_id: str
    speaker: str
    path: str
    transcript: str
    frame_offset: int
    n_frames: int
    sample_offset: int
    n_samples: int


class PreparedCorpus:
    """Read access to a directory written by :func:`voiceconv.training.prepare.prepare`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise VoiceconvError(f"{self.directory}: not a prepared directory (no meta.json); run 'voiceconv prepare'")
        self.meta = json.loads(meta_path.read_text())
        self.mel_config = MelConfig.from_dict(self.meta["mel"])
        with open(self.directory / "index.csv", newline="") as handle:
            self.utterances = [
                Utterance(r["utterance_id"], r["speaker"], r["path"], r["transcript"], int(r["frame_offset"]),
                          int(r["n_frames"]), int(r["sample_offset"]), int(r["n_samples"]))
                for r in csv.DictReader(handle)
            ]
        self.speakers = sorted({u.speaker for u in self.utterances})
        self.mels_path = self.directory / "mels.npy"
        self._mels = None
        self._audio = None

    @property
    def mels(self) -> np.ndarray:
        # Opened lazily so the object pickles cheaply into worker processes.
        if self._mels is None:
            self._mels = np.load(self.mels_path, mmap_mode="r")
        return self._mels

    def with_mels(self, path: str | Path) -> PreparedCorpus:
        """The same utterances and audio, with the mels read from ``path`` (the layout of ``mels.npy``).

        A vocoder fine-tuned on a VC model's reconstructions reads them in place of the recordings' mels.
        """
        mels = np.load(path, mmap_mode="r")
        if mels.shape != self.mels.shape:
            raise VoiceconvError(f"{path}: mels of shape {mels.shape} do not match {self.mels_path} "
                                 f"{self.mels.shape}: it was made from another corpus")
        other = copy.copy(self)
        other.mels_path, other._mels = Path(path), None
        return other

    @property
    def audio_array(self) -> np.ndarray:
        if self._audio is None:
            self._audio = np.load(self.directory / "audio.npy", mmap_mode="r")
        return self._audio

    def __len__(self) -> int:
        return len(self.utterances)

    def mel(self, index: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Log-mel of utterance ``index``, ``(n_mels, frames)`` float32."""
        u = self.utterances[index]
        length = u.n_frames - start if length is None else length
        return np.asarray(self.mels[u.frame_offset + start : u.frame_offset + start + length], np.float32).T

    def audio(self, index: int, start_frame: int = 0, n_frames: int | None = None) -> np.ndarray:
        """Waveform of utterance ``index`` aligned to its frames, ``(frames * hop,)`` float32."""
        u = self.utterances[index]
        hop = self.mel_config.hop_length
        n_frames = u.n_frames - start_frame if n_frames is None else n_frames
        begin = u.sample_offset + start_frame * hop
        return np.asarray(self.audio_array[begin : begin + n_frames * hop], np.float32) / 32767.0

    def indices_for(self, speakers) -> list[int]:
        wanted = set(speakers)
        return [i for i, u in enumerate(self.utterances) if u.speaker in wanted]

    def split_speakers(self, n_held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
        """Deterministically hold out ``n_held_out`` speakers (for unseen-speaker validation)."""
        rng = np.random.default_rng(seed)
        order = list(rng.permutation(len(self.speakers)))
        held = sorted(self.speakers[i] for i in order[:n_held_out])
        return [s for s in self.speakers if s not in held], held


class SegmentBatcher:
    """Speaker-balanced random segments: a speaker uniformly, one of their utterances, an offset.

    ``batch(step)`` depends only on ``(seed, step, rank)``, so resumption and DDP sharding need no
    sampler state. Utterances shorter than the segment are padded with the silence value (the
    log of the mel clamp) and the returned ``mask`` marks real frames.
    """

    def __init__(self, corpus: PreparedCorpus, segment_frames: int, batch_size: int, seed: int = 0,
                 indices: list[int] | None = None, rank: int = 0, world_size: int = 1, with_audio: bool = False,
                 speaker_ids: dict[str, int] | None = None, with_reference: bool = False):
        self.corpus = corpus
        self.with_reference = with_reference
        self.segment_frames = segment_frames
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.with_audio = with_audio
        indices = list(range(len(corpus))) if indices is None else list(indices)
        if not indices:
            raise VoiceconvError("no utterances to sample from")
        self.by_speaker: dict[str, list[int]] = {}
        for i in indices:
            self.by_speaker.setdefault(corpus.utterances[i].speaker, []).append(i)
        self.speakers = sorted(self.by_speaker)
        # Speaker ids are over the whole corpus so a classifier sees consistent labels across splits.
        self.speaker_ids = speaker_ids or {s: k for k, s in enumerate(corpus.speakers)}

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """``mel (B, n_mels, S)``, ``speaker (B,)``, ``mask (B, S)``, optionally ``audio (B, S * hop)``.

        With ``with_reference``, also ``ref_mel (B, n_mels, S)`` and ``ref_mask (B, S)``: another
        random segment of the same speaker (another utterance when there is one), for the speaker
        encoder, so that it must describe the voice rather than the segment being rebuilt.
        """
        rng = np.random.default_rng([self.seed, step, self.rank])
        c = self.corpus.mel_config
        S = self.segment_frames
        mels = np.full((self.batch_size, c.n_mels, S), c.min_log, np.float32)
        mask = np.zeros((self.batch_size, S), np.float32)
        audio = np.zeros((self.batch_size, S * c.hop_length), np.float32) if self.with_audio else None
        speakers = np.zeros(self.batch_size, np.int64)
        for b in range(self.batch_size):
            speaker = self.speakers[rng.integers(len(self.speakers))]
            index = self.by_speaker[speaker][rng.integers(len(self.by_speaker[speaker]))]
            n_frames = self.corpus.utterances[index].n_frames
            length = min(S, n_frames)
            start = int(rng.integers(n_frames - length + 1))
            mels[b, :, :length] = self.corpus.mel(index, start, length)
            mask[b, :length] = 1.0
            if audio is not None:
                audio[b, : length * c.hop_length] = self.corpus.audio(index, start, length)
            speakers[b] = self.speaker_ids[speaker]
        out = {"mel": torch.from_numpy(mels), "speaker": torch.from_numpy(speakers), "mask": torch.from_numpy(mask)}
        if self.with_reference:
            out.update(self._references(step, speakers))
        if audio is not None:
            out["audio"] = torch.from_numpy(audio)
        return out

    def _references(self, step: int, speaker_ids: np.ndarray) -> dict[str, torch.Tensor]:
        # A generator of its own, so the main segments are the same with and without references.
        rng = np.random.default_rng([self.seed, step, self.rank, 1])
        names = {k: s for s, k in self.speaker_ids.items()}
        c = self.corpus.mel_config
        S = self.segment_frames
        mels = np.full((len(speaker_ids), c.n_mels, S), c.min_log, np.float32)
        mask = np.zeros((len(speaker_ids), S), np.float32)
        for b, speaker_id in enumerate(speaker_ids):
            utterances = self.by_speaker[names[int(speaker_id)]]
            index = utterances[rng.integers(len(utterances))]
            n_frames = self.corpus.utterances[index].n_frames
            length = min(S, n_frames)
            start = int(rng.integers(n_frames - length + 1))
            mels[b, :, :length] = self.corpus.mel(index, start, length)
            mask[b, :length] = 1.0
        return {"ref_mel": torch.from_numpy(mels), "ref_mask": torch.from_numpy(mask)}
