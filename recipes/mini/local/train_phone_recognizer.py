"""Train the phone recogniser that ``train.phonetic`` uses (voiceconv/training/phonetic.py).

    python recipes/mini/local/train_phone_recognizer.py --data data/mini/prepared --out exp/mini/phones \
        --render-with voiceconv/pretrained/vc --steps 2500 --threads 2

The corpus's transcribed utterances (Kathleen's ARCTIC prompts and the synthetic voices; the LibriSpeech
clips have no transcripts) are phonemised with espeak-ng (``-x``: ASCII phone names, stress marks dropped).
One real voice and synthetic ones would teach a recogniser those voices, while the VC trainer's sources are
mostly LibriSpeech speakers. So with ``--render-with`` each transcribed training utterance is also rendered,
mel to mel, by that VC model in the voice of a random LibriSpeech training speaker (it keeps the timing and
most of the words); the recogniser trains on both. The training speakers are the VC trainer's (seeded
split, 10 held out as the speaker critic does); Kathleen's last ``--held-out-utterances`` prompts are held
out too, and so is every sentence they or the held-out voices say, in any voice. The phone error rate is
printed on held-out sentences that no other voice says: Kathleen's real speech, the synthetic voices, and
(with ``--render-with``) the same utterances rendered in held-out LibriSpeech voices. ``--evaluate-only``
prints those figures for the recogniser already in ``--out``. It is our own network and never a judge: the
judges (Resemblyzer, pocketsphinx) only measure.

The recogniser in ``recipes/mini/weights/phones`` was trained at commit d0d88e2, before training left out
the held-out sentences: it heard 94 of its 120 held-out utterances' sentences in other voices, so only the
figures on the rest (``--evaluate-only``) are honest, and its inventory has one glued boundary mark (``!w``).
Rendering with the model that round 23 starts from also teaches it that model's conversions as correct.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess

import numpy as np
import torch

from voiceconv.evaluation.metrics import edit_distance
from voiceconv.models.phone_recognizer import PhoneRecognizer
from voiceconv.models.vc_model import VCModel
from voiceconv.training.data import PreparedCorpus
from voiceconv.training.phonetic import RecognizerTrainConfig, new_recognizer, train_recognizer, transcribe

STRESS_MARKS = str.maketrans("", "", "',%=")
BOUNDARY_MARKS = "|!;?"  # pauses and boundaries, not phones

log = logging.getLogger("train_phone_recognizer")


def phonemise(text: str, voice: str = "en-us") -> list[str]:
    """espeak-ng's ASCII phone names for ``text`` (``-x --sep=_``), stress marks dropped, no word breaks."""
    result = subprocess.run(["espeak-ng", "-q", "-x", "--sep=_", "-v", voice, text],
                            capture_output=True, text=True, check=True)
    phones = []
    for word in result.stdout.split():
        # A boundary mark can be glued to the next phone ("_!w"): strip it off every token.
        phones += [p for p in (token.strip(BOUNDARY_MARKS) for token in word.translate(STRESS_MARKS).split("_"))
                   if p and p != ":"]  # a lone ":" is a lengthening mark
    return phones


def render(model: VCModel, corpus: PreparedCorpus, indices: list[int], voices: list[int], seed: int,
           segment_frames: int = 256) -> list[np.ndarray]:
    """Each utterance of ``indices`` re-voiced as a random one of the ``voices`` utterances (its first
    ``segment_frames`` frames embedded), mel to mel: ``(n_mels, T)`` each."""
    rng = np.random.default_rng(seed)
    rendered = []
    with torch.no_grad():
        for index in indices:
            voice = voices[rng.integers(len(voices))]
            frames = min(segment_frames, corpus.utterances[voice].n_frames)
            speaker = model.embed(torch.from_numpy(corpus.mel(voice, 0, frames)).unsqueeze(0))  # (1, D)
            source = torch.from_numpy(corpus.mel(index)).unsqueeze(0)  # (1, n_mels, T)
            rendered.append(model.convert(source, speaker)[0].numpy())
    return rendered


def phone_error_rate(recognizer, pairs: list[tuple[np.ndarray, list[str]]]) -> float:
    errors = sum(edit_distance(phones, transcribe(recognizer, mel)) for mel, phones in pairs)
    return errors / max(1, sum(len(phones) for _, phones in pairs))


def normalise(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def split(corpus: PreparedCorpus, held_speakers: list[str], held_out_utterances: int
          ) -> tuple[list[int], list[int], list[int]]:
    """``(train, held_out, clean)`` transcribed utterance indices. Held out: every transcribed utterance of
    ``held_speakers`` and Kathleen's last ``held_out_utterances`` prompts. Training leaves out every utterance
    that says a held-out sentence (the synthetic voices read the same prompts as Kathleen). ``clean`` is the
    held-out utterances whose sentence no other voice says at all, so no recogniser trained on this corpus
    has heard it (also those trained before training left such sentences out)."""
    transcribed = [i for i, u in enumerate(corpus.utterances) if u.transcript.strip()]
    held_set = set(held_speakers)
    held_out = [i for i in transcribed if corpus.utterances[i].speaker in held_set]
    kathleen = [i for i in transcribed if corpus.utterances[i].speaker == "kathleen"]
    if held_out_utterances:
        held_out += [i for i in kathleen[-held_out_utterances:] if i not in held_out]
    held_ids = set(held_out)
    held_sentences = {normalise(corpus.utterances[i].transcript) for i in held_out}
    others = [i for i in transcribed if i not in held_ids]
    train = [i for i in others if normalise(corpus.utterances[i].transcript) not in held_sentences]
    said_elsewhere = {normalise(corpus.utterances[i].transcript) for i in others}
    clean = [i for i in held_out if normalise(corpus.utterances[i].transcript) not in said_elsewhere]
    return train, held_out, clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared corpus (voiceconv prepare)")
    parser.add_argument("--out", required=True, help="directory for the recogniser (model.safetensors, config.json)")
    parser.add_argument("--render-with", default=None, help="a VC model directory to render the transcribed "
                        "utterances in other training voices (see above)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="do not train: print the phone error rates of the recogniser already in --out")
    parser.add_argument("--steps", type=int, default=RecognizerTrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=RecognizerTrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=RecognizerTrainConfig.lr)
    parser.add_argument("--held-out-speakers", type=int, default=10)
    parser.add_argument("--held-out-utterances", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    corpus = PreparedCorpus(args.data)
    train_speakers, held_speakers = corpus.split_speakers(args.held_out_speakers, args.seed)
    train, held_out, clean = split(corpus, held_speakers, args.held_out_utterances)
    log.info("phonemising %d utterances", len(train) + len(held_out))
    phones = {i: phonemise(corpus.utterances[i].transcript) for i in train + held_out}
    scores: dict = {"train_utterances": len(train), "held_out_utterances": len(held_out),
                    "held_out_clean_utterances": len(clean)}
    model = None
    if args.render_with:
        model = VCModel.from_pretrained(args.render_with, device="cpu", mel_config=corpus.mel_config)
    if args.evaluate_only:
        recognizer = PhoneRecognizer.from_pretrained(args.out, device=args.device)
    else:
        inventory = sorted({p for sequence in phones.values() for p in sequence})
        index_of = {p: k for k, p in enumerate(inventory)}
        log.info("%d phones: %s", len(inventory), " ".join(inventory))
        examples = [(corpus.mel(i), [index_of[p] for p in phones[i]]) for i in train]
        if model is not None:
            train_voices = [i for i in corpus.indices_for(train_speakers)
                            if not corpus.utterances[i].transcript.strip()]
            log.info("rendering %d utterances in %d other voices with %s", len(train), len(train_voices),
                     args.render_with)
            examples += [(mel, tokens) for mel, (_, tokens) in
                         zip(render(model, corpus, train, train_voices, args.seed), examples)]
        recognizer = new_recognizer(inventory, corpus.mel_config)
        config = RecognizerTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        recognizer, trained = train_recognizer(examples, config, recognizer, corpus.mel_config.min_log,
                                               args.device)
        scores.update(trained, phones=len(inventory))
    # Phone error rates on held-out sentences that no training voice says: Kathleen's real speech, the
    # synthetic voices, and (with --render-with) those same utterances in held-out LibriSpeech voices.
    groups = {"kathleen": [i for i in clean if corpus.utterances[i].speaker == "kathleen"],
              "synthetic": [i for i in clean if corpus.utterances[i].speaker != "kathleen"]}
    for name, indices in groups.items():
        if indices:
            scores[f"per_{name}"] = phone_error_rate(recognizer, [(corpus.mel(i), phones[i]) for i in indices])
            scores[f"utterances_{name}"] = len(indices)
    if model is not None and clean:
        rendered = render(model, corpus, clean, corpus.indices_for(held_speakers), args.seed + 1)
        scores["per_rendered_in_held_out_voices"] = phone_error_rate(
            recognizer, [(mel, phones[i]) for mel, i in zip(rendered, clean)])
    if not args.evaluate_only:
        recognizer.save_pretrained(args.out, extra={"trained_on": args.data, "rendered_with": args.render_with,
                                                    "steps": args.steps, "scores": scores})
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
