"""``Speaker``: a target voice embedded once and reused for many conversions.

A speaker is the mean of the model's speaker vectors over one or more reference clips, plus the
log-F0 statistics that ``pitch="auto"`` needs, plus enough metadata to refuse misuse::

    speaker = vc.embed_speaker(["ref1.wav", "ref2.wav", "ref3.wav"])
    speaker.save("voice.spk")                 # a small safetensors file (a few KB)
    speaker = Speaker.load("voice.spk")
    wav = vc.convert("source.wav", speaker)   # refused if voice.spk was made by another model

By default the vector is then fitted to the references (:mod:`voiceconv.convert.adapt`: the
decoder's reconstruction of the clips, a few seconds once per voice); the encoder's own mean vector
is kept beside it as ``encoder_embedding`` for comparing voices in the encoder's space.

The vectors are averaged as they come out of the speaker encoder, **without** L2 normalisation:
the AdaIN decoder turns the vector into per-channel scales and biases, so its length carries
information the decoder was trained on; normalising it would feed the decoder vectors it never saw.
(Cosine similarity, used to *compare* speakers, normalises on its own.)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from voiceconv.atomic import atomic_path
from voiceconv.errors import VoiceconvError

FORMAT = "voiceconv-speaker"  # metadata["format"] of every .spk file
FORMAT_VERSION = 1  # bump when the fields below change meaning
SPEAKER_SUFFIX = ".spk"


class SpeakerFileError(VoiceconvError):
    """A .spk file is missing, unreadable or not a voiceconv speaker file."""


class SpeakerMismatchError(VoiceconvError):
    """A speaker was embedded by a different model than the one converting."""


@dataclass(eq=False)  # identity equality and hashing, so a Speaker can key a blend's weights
class Speaker:
    """A target voice: ``embedding (D,)`` float32 plus pitch statistics and provenance.

    ``log_f0_mean`` / ``log_f0_std`` are over the voiced 10 ms frames of all references (natural
    log of Hz); NaN when the references had too little voiced speech, which turns ``pitch="auto"``
    into no shift. ``encoder_embedding (D,)`` is the speaker encoder's mean vector when
    ``embedding`` was fitted to the references (``adapt_steps > 0``), else None: similarity is
    measured in the encoder's space, where the decoder's fitted code does not live.
    ``model_sha256`` identifies the weights that produced ``embedding``
    (:attr:`voiceconv.convert.converter.VoiceConverter.model_sha256`); an empty string means
    unknown (accepted by any model, e.g. a vector built by hand with :meth:`from_embedding`).
    """

    embedding: torch.Tensor
    log_f0_mean: float = math.nan
    log_f0_std: float = math.nan
    n_clips: int = 0
    seconds: float = 0.0  # speech seconds used, after trimming leading/trailing silence
    voiced_seconds: float = 0.0
    model_sha256: str = ""
    name: str = ""
    encoder_embedding: torch.Tensor | None = None
    adapt_steps: int = 0  # Adam steps that fitted ``embedding`` to the references (0: the encoder's mean)

    def __post_init__(self) -> None:
        self.embedding = _vector(self.embedding, "speaker embedding")
        if self.encoder_embedding is not None:
            self.encoder_embedding = _vector(self.encoder_embedding, "encoder embedding")
            if self.encoder_embedding.shape != self.embedding.shape:
                raise VoiceconvError(f"encoder embedding {tuple(self.encoder_embedding.shape)} and embedding "
                                     f"{tuple(self.embedding.shape)} differ in size")

    @property
    def comparison_embedding(self) -> torch.Tensor:
        """The vector to compare with the encoder's vectors of other audio (the encoder's own mean)."""
        return self.encoder_embedding if self.encoder_embedding is not None else self.embedding

    @property
    def dim(self) -> int:
        return int(self.embedding.numel())

    @property
    def has_pitch(self) -> bool:
        return math.isfinite(self.log_f0_mean)

    @property
    def f0_hz(self) -> float:
        """Geometric-mean F0 of the references in Hz (NaN if unknown)."""
        return math.exp(self.log_f0_mean) if self.has_pitch else math.nan

    @classmethod
    def from_embedding(cls, embedding, name: str = "") -> Speaker:
        """A speaker from a bare ``(D,)`` vector: no pitch statistics, accepted by any model."""
        return cls(embedding=torch.as_tensor(embedding), name=name)

    def describe(self) -> str:
        pitch = f"mean F0 {self.f0_hz:.0f} Hz" if self.has_pitch else "no pitch statistics"
        fitted = f", fitted to the clips in {self.adapt_steps} steps" if self.adapt_steps else ""
        return (f"speaker '{self.name or 'unnamed'}': {self.n_clips} clip(s), {self.seconds:.1f} s of speech, "
                f"{pitch}, D={self.dim}{fitted}")

    # ---- blending -------------------------------------------------------------------------------

    @staticmethod
    def blend(weighted: list[tuple[Speaker, float]], name: str = "") -> Speaker:
        """A new voice: the weighted mean of the speakers' vectors (weights >= 0 summing to 1).

        The speaker vector is the code AdaIN-VC's decoder reads, so points between two voices are
        voices in between. Pitch statistics blend the same way (over the speakers that have them),
        so ``pitch="auto"`` aims between the voices' registers. All speakers must come from the
        same model. Raises :class:`VoiceconvError` on bad weights.
        """
        if not weighted:
            raise VoiceconvError("a blend needs at least one voice with a weight, e.g. {voice_a: 0.5, voice_b: 0.5}")
        weights = [float(weight) for _, weight in weighted]
        if any(not math.isfinite(weight) or weight < 0 for weight in weights):
            raise VoiceconvError(f"blend weights must be zero or positive, got {weights}; a negative weight would "
                                 "extrapolate past a voice, not blend it")
        if abs(sum(weights) - 1.0) > 1e-4:
            raise VoiceconvError(f"blend weights must sum to 1, got {weights} (sum {sum(weights):.4g}); e.g. 0.7 and "
                                 "0.3 for a voice mostly like the first")
        speakers = [speaker for speaker, _ in weighted]
        dims = {speaker.dim for speaker in speakers}
        models = {speaker.model_sha256 for speaker in speakers if speaker.model_sha256}
        if len(dims) > 1 or len(models) > 1:
            raise SpeakerMismatchError("the voices of a blend were embedded by different models; embed them all "
                                       "with the model that will convert")
        embedding = sum(weight * speaker.embedding for speaker, weight in zip(speakers, weights))
        # The encoder-space vector blends the same way; a voice without one contributes its embedding.
        fitted = any(speaker.encoder_embedding is not None for speaker in speakers)
        encoder_embedding = (sum(weight * speaker.comparison_embedding for speaker, weight in zip(speakers, weights))
                             if fitted else None)
        pitched = [(speaker, weight) for speaker, weight in zip(speakers, weights) if speaker.has_pitch and weight > 0]
        total = sum(weight for _, weight in pitched)
        f0_mean = sum(w * s.log_f0_mean for s, w in pitched) / total if pitched else math.nan
        f0_std = sum(w * s.log_f0_std for s, w in pitched) / total if pitched else math.nan
        label = name or " + ".join(f"{weight:g} {speaker.name or 'voice'}"
                                   for speaker, weight in zip(speakers, weights))
        return Speaker(embedding=embedding, log_f0_mean=f0_mean, log_f0_std=f0_std,
                       n_clips=sum(speaker.n_clips for speaker in speakers),
                       seconds=sum(speaker.seconds for speaker in speakers),
                       voiced_seconds=sum(speaker.voiced_seconds for speaker in speakers),
                       model_sha256=next(iter(models), ""), name=label, encoder_embedding=encoder_embedding,
                       adapt_steps=max(speaker.adapt_steps for speaker in speakers))

    # ---- files ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write a ``.spk`` safetensors file atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
        metadata = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "model_sha256": self.model_sha256,
            "n_clips": str(self.n_clips),
            "seconds": repr(float(self.seconds)),
            "voiced_seconds": repr(float(self.voiced_seconds)),
            "log_f0_mean": repr(float(self.log_f0_mean)),
            "log_f0_std": repr(float(self.log_f0_std)),
            "name": self.name,
            "l2_normalized": "false",
            "adapt_steps": str(int(self.adapt_steps)),
        }
        from voiceconv import __version__

        metadata["voiceconv_version"] = __version__
        with atomic_path(path) as temp:
            tensors = {"embedding": self.embedding.clone()}
            if self.encoder_embedding is not None:
                tensors["encoder_embedding"] = self.encoder_embedding.clone()
            save_file(tensors, str(temp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Speaker:
        """Read a ``.spk`` file written by :meth:`save`; :class:`SpeakerFileError` if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise SpeakerFileError(
                f"{path}: speaker file not found; create one with 'voiceconv embed REF... -o {path}'"
            )
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as error:
            raise SpeakerFileError(f"{path}: not a readable speaker file ({error}); re-create it with "
                                   "'voiceconv embed'") from None
        if metadata.get("format") != FORMAT or "embedding" not in tensors:
            raise SpeakerFileError(f"{path}: a safetensors file but not a voiceconv speaker (.spk) file; "
                                   "create one with 'voiceconv embed REF... -o voice.spk'")
        version = metadata.get("format_version")
        if version != str(FORMAT_VERSION):
            raise SpeakerFileError(f"{path}: speaker file format version {version}, this voiceconv reads "
                                   f"{FORMAT_VERSION}; re-create it with 'voiceconv embed'")
        try:
            return cls(
                embedding=tensors["embedding"],
                log_f0_mean=float(metadata.get("log_f0_mean", "nan")),
                log_f0_std=float(metadata.get("log_f0_std", "nan")),
                n_clips=int(metadata.get("n_clips", "0")),
                seconds=float(metadata.get("seconds", "0")),
                voiced_seconds=float(metadata.get("voiced_seconds", "0")),
                model_sha256=metadata.get("model_sha256", ""),
                name=metadata.get("name", ""),
                # Both absent in files from before adaptation: the encoder's vector, unfitted.
                encoder_embedding=tensors.get("encoder_embedding"),
                adapt_steps=int(metadata.get("adapt_steps", "0")),
            )
        except (ValueError, VoiceconvError) as error:
            raise SpeakerFileError(f"{path}: corrupt speaker metadata ({error}); re-create it with "
                                   "'voiceconv embed'") from None

    def check_model(self, model_sha256: str, speaker_dim: int, where: str = "speaker") -> None:
        """Raise :class:`SpeakerMismatchError` unless this speaker fits the model ``model_sha256``."""
        if self.dim != speaker_dim:
            raise SpeakerMismatchError(
                f"{where} has a {self.dim}-dim embedding but the model uses {speaker_dim}-dim speaker vectors; "
                "it was made with a different model. Re-embed the reference clips with this model "
                "('voiceconv embed REF... -o voice.spk --model DIR')"
            )
        if self.model_sha256 and model_sha256 and self.model_sha256 != model_sha256:
            raise SpeakerMismatchError(
                f"{where} was embedded with model {self.model_sha256[:12]}..., but this converter uses model "
                f"{model_sha256[:12]}...; speaker vectors only make sense for the model that made them. "
                "Re-embed the reference clips with this model ('voiceconv embed REF... -o voice.spk --model DIR')"
            )


def _vector(value, what: str) -> torch.Tensor:
    vector = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
    if vector.dim() != 1 or vector.numel() == 0:
        raise VoiceconvError(f"a {what} must be a 1-D vector (D,), got shape {tuple(vector.shape)}")
    if not torch.isfinite(vector).all():
        raise VoiceconvError(f"the {what} contains NaN or Inf; re-embed the reference clips")
    return vector.contiguous()
