"""Disentanglement probe: how much speaker identity can a linear classifier read from each representation?

A well disentangled model puts the speaker in the speaker vector and leaves it out of the content
code. The probe freezes the model, cuts every utterance into fixed-length chunks (so corpora with
one utterance per speaker, like parts of LibriSpeech, still work), and per speaker puts the first
``train_fraction`` of its chunks in a probe-training set and the rest in a probe-test set, so
training and test chunks come from different utterances or different time regions. A logistic
regression (one linear layer, full-batch Adam) is then trained on the training chunks of each
representation and scored on the test chunks:

- ``speaker_vector``: ``model.embed(chunk)`` ``(D,)``; should be near 100 %;
- ``content_mean``: the content code averaged over the chunk ``(C,)``; should be near chance;
- ``content_frames``: every content frame ``(C,)`` on its own (a classifier that sees single
  frames, closer to what the decoder sees);
- ``input_mel_mean``: the chunk's average log-mel ``(n_mels,)``, a reference for how much speaker
  information the input itself carries to a linear reader.

Chance is the share of the most frequent speaker among the test items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from voiceconv.errors import VoiceconvError
from voiceconv.training.data import PreparedCorpus

logger = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    chunk_seconds: float = 1.0  # item length; 1 s holds a few syllables and gives single-utterance speakers many items
    train_fraction: float = 0.7  # first 70 % of each speaker's chunks (in corpus order) train the probe
    max_speakers: int = 200  # cap on speakers (sorted by name) to bound the cost
    max_chunks_per_speaker: int = 40  # evenly spaced over the speaker's chunks when there are more
    max_train_frames: int = 100_000  # random subset of content frames for the frame-level probe
    steps: int = 300  # full-batch Adam steps of the logistic regression
    lr: float = 0.05  # Adam learning rate on standardised features
    weight_decay: float = 1e-3  # L2 on the weights: keeps the probe linear-ish and stable with few items
    seed: int = 0  # frame subsampling and classifier initialisation

    def __post_init__(self) -> None:
        if self.chunk_seconds <= 0 or not 0.0 < self.train_fraction < 1.0:
            raise VoiceconvError("chunk_seconds must be > 0 and train_fraction in (0, 1)")


@dataclass
class Chunk:
    speaker: str
    index: int  # utterance index in the corpus
    start: int  # first frame
    length: int  # frames


def make_chunks(corpus: PreparedCorpus, speakers: list[str], config: ProbeConfig) -> tuple[list[Chunk], list[Chunk]]:
    """Split each speaker's chunks in corpus order into probe-train and probe-test lists."""
    chunk = max(1, round(config.chunk_seconds * corpus.mel_config.frame_rate))
    train, test, dropped = [], [], []
    for speaker in speakers:
        items = []
        for index in corpus.indices_for([speaker]):
            n_frames = corpus.utterances[index].n_frames
            if n_frames < chunk:
                if n_frames >= chunk // 2:  # a short utterance is one (shorter) item rather than nothing
                    items.append(Chunk(speaker, index, 0, n_frames))
                continue
            items += [Chunk(speaker, index, start, chunk) for start in range(0, n_frames - chunk + 1, chunk)]
        if len(items) > config.max_chunks_per_speaker:
            keep = np.linspace(0, len(items) - 1, config.max_chunks_per_speaker).round().astype(int)
            items = [items[i] for i in keep]
        if len(items) < 2:
            dropped.append(speaker)
            continue
        n_train = min(max(1, round(config.train_fraction * len(items))), len(items) - 1)
        train += items[:n_train]
        test += items[n_train:]
    if dropped:
        logger.warning("%d speakers have less than 2 chunks of %.2f s and are left out: %s", len(dropped),
                       config.chunk_seconds, ", ".join(dropped[:10]))
    return train, test


@torch.no_grad()
def extract(model, corpus: PreparedCorpus, chunks: list[Chunk], device: torch.device) -> dict[str, list]:
    """Per chunk: speaker vector ``(D,)``, content frames ``(T', C)`` and mean log-mel ``(n_mels,)``."""
    features: dict[str, list] = {"speaker_vector": [], "content_frames": [], "input_mel_mean": []}
    for item in chunks:
        mel = torch.from_numpy(corpus.mel(item.index, item.start, item.length)).to(device)[None]  # (1, n_mels, T)
        features["speaker_vector"].append(model.embed(mel)[0].float().cpu())
        features["content_frames"].append(model.encode_content(mel)[0].float().cpu().T)  # (T', C)
        features["input_mel_mean"].append(mel[0].mean(dim=-1).float().cpu())
    return features


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 n_classes: int, config: ProbeConfig) -> tuple[float, float]:
    """Multinomial logistic regression on standardised features; returns (train, test) accuracy."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    generator = torch.Generator().manual_seed(config.seed)
    layer = torch.nn.Linear(x_train.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)
        layer.bias.zero_()
    optimizer = torch.optim.Adam(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    with torch.enable_grad():
        for _ in range(config.steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(layer(x_train), y_train).backward()
            optimizer.step()
    with torch.no_grad():
        train_accuracy = (layer(x_train).argmax(1) == y_train).float().mean().item()
        test_accuracy = (layer(x_test).argmax(1) == y_test).float().mean().item()
    return train_accuracy, test_accuracy


def run_probe(model, corpus: PreparedCorpus, config: ProbeConfig | None = None, speakers: list[str] | None = None,
              device: str | torch.device | None = None) -> dict:
    """Probe ``model`` (a ``VCModel``) on ``speakers`` of ``corpus`` (default: all). Returns a JSON-able dict."""
    config = config or ProbeConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    corpus.mel_config.check_compatible(model.mel_config, "prepared data", "model")
    speakers = sorted(speakers if speakers is not None else corpus.speakers)[: config.max_speakers]
    train_chunks, test_chunks = make_chunks(corpus, speakers, config)
    used = sorted({c.speaker for c in train_chunks})
    if len(used) < 2:
        raise VoiceconvError(f"the probe needs >= 2 speakers with >= 2 chunks of {config.chunk_seconds} s each; "
                             f"found {len(used)}. Use more data or a smaller --chunk-seconds")
    label = {s: k for k, s in enumerate(used)}
    y_train = torch.tensor([label[c.speaker] for c in train_chunks])
    y_test = torch.tensor([label[c.speaker] for c in test_chunks])
    train_features = extract(model, corpus, train_chunks, device)
    test_features = extract(model, corpus, test_chunks, device)

    sets = {
        "speaker_vector": (torch.stack(train_features["speaker_vector"]), y_train,
                           torch.stack(test_features["speaker_vector"]), y_test),
        "content_mean": (torch.stack([f.mean(0) for f in train_features["content_frames"]]), y_train,
                         torch.stack([f.mean(0) for f in test_features["content_frames"]]), y_test),
        "content_frames": (*_frames(train_features["content_frames"], y_train),
                           *_frames(test_features["content_frames"], y_test)),
        "input_mel_mean": (torch.stack(train_features["input_mel_mean"]), y_train,
                           torch.stack(test_features["input_mel_mean"]), y_test),
    }
    x, y, _, _ = sets["content_frames"]
    if len(x) > config.max_train_frames:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed))[: config.max_train_frames]
        sets["content_frames"] = (x[keep], y[keep], *sets["content_frames"][2:])

    probes = {}
    for name, (x_train, y_train_set, x_test, y_test_set) in sets.items():
        train_accuracy, test_accuracy = linear_probe(x_train, y_train_set, x_test, y_test_set, len(used), config)
        probes[name] = {"dim": int(x_train.shape[1]), "n_train": int(len(x_train)), "n_test": int(len(x_test)),
                        "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
                        "chance": _chance(y_test_set, len(used))}
    return {
        "n_speakers": len(used),
        "n_train_chunks": len(train_chunks),
        "n_test_chunks": len(test_chunks),
        "chunk_seconds": config.chunk_seconds,
        "chance": _chance(y_test, len(used)),
        "probes": probes,
    }


def _frames(frames: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-chunk frames ``[(T'_i, C)]`` into ``(sum T'_i, C)`` with each chunk's label repeated."""
    counts = torch.tensor([len(f) for f in frames])
    return torch.cat(frames), labels.repeat_interleave(counts)


def _chance(labels: torch.Tensor, n_classes: int) -> float:
    """Accuracy of always guessing the most frequent test speaker."""
    return float(torch.bincount(labels, minlength=n_classes).max().item() / max(len(labels), 1))


def format_table(report: dict) -> str:
    """The report as an aligned text table."""
    lines = [f"{report['n_speakers']} speakers, {report['n_train_chunks']} train / {report['n_test_chunks']} test "
             f"chunks of {report['chunk_seconds']} s; chance {report['chance']:.3f}",
             f"{'representation':<16} {'dim':>5} {'n_train':>8} {'n_test':>7} {'train acc':>10} {'test acc':>9}"]
    for name, probe in report["probes"].items():
        lines.append(f"{name:<16} {probe['dim']:>5} {probe['n_train']:>8} {probe['n_test']:>7} "
                     f"{probe['train_accuracy']:>10.3f} {probe['test_accuracy']:>9.3f}")
    return "\n".join(lines)
