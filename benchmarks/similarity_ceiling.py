"""Where does the judge's similarity stop? The same voice through each stage of the pipeline (issue 12).

    python benchmarks/similarity_ceiling.py --clips data/mini/clips --model voiceconv/pretrained/vc \
        --vocoder voiceconv/pretrained/vocoder

``--clips`` holds one folder per held-out speaker with 3 or more clips (the mini recipe's
``data/mini/clips``). For each speaker and each of its clips in turn, the other clips are the
references, and the independent judge (Resemblyzer; it only measures) scores against their mean
d-vector:

- ``real``: the left-out clip itself (how well the judge knows this voice from these references);
- ``resynthesis``: the clip through the vocoder from its own mel (the vocoder's cost);
- ``self conversion``: the clip converted toward its own voice, embedded from the other clips, with
  and without speaker fitting (the auto-encoder rebuilding a voice whose content code came from
  that same voice);
- ``conversion``: a clip of another held-out speaker (seeded choice) converted toward the voice,
  and that clip unconverted (``other source``).

Self conversion near ``real`` with conversion far below means the decoder can render the voice,
but the content code of another speaker carries that speaker's voice into the output.
Prints the mean ± s.e. of each row, and the share at or above the judge's EER threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

EER_THRESHOLD = 0.806  # the judge's equal-error-rate cosine on these speakers (README)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", required=True, help="folder of speaker folders with 3+ clips each")
    parser.add_argument("--model", default=None, help="VC model directory (default: shipped)")
    parser.add_argument("--vocoder", default=None, help="vocoder directory (default: the model's default)")
    parser.add_argument("--adapt-steps", type=int, default=10, help="speaker fitting steps of the fitted rows")
    parser.add_argument("--pitch", default="off", help="pitch option of every conversion, as for 'voiceconv "
                        "convert' (auto: does moving the source's pitch to the target's close the gap?)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from voiceconv.audio import load_audio
    from voiceconv.convert.converter import VoiceConverter
    from voiceconv.convert.pitch import parse_pitch
    from voiceconv.evaluation.judges import EVAL_RATE, SpeakerJudge

    torch.set_num_threads(args.threads)
    vc = VoiceConverter.from_pretrained(args.model, vocoder=args.vocoder, device="cpu")
    judge = SpeakerJudge()
    speakers = sorted(p.name for p in Path(args.clips).iterdir() if p.is_dir())
    clips = {s: sorted(str(p) for p in (Path(args.clips) / s).glob("*.wav")) for s in speakers}
    speakers = [s for s in speakers if len(clips[s]) >= 3]
    if len(speakers) < 2:
        sys.exit(f"{args.clips}: need at least 2 speaker folders with 3 or more .wav clips each")

    def embed(audio: np.ndarray, rate: int) -> np.ndarray:
        return judge.embed(load_audio(audio, EVAL_RATE, source_rate=rate))

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    pitch = parse_pitch(args.pitch)
    rng = np.random.default_rng(args.seed)
    fitted = f"self conversion, {args.adapt_steps}-step fitting"
    rows = {name: [] for name in ("real", "resynthesis", fitted, "self conversion, no fitting",
                                  f"conversion from another speaker, {args.adapt_steps}-step fitting", "other source")}
    for speaker in speakers:
        for k, clip in enumerate(clips[speaker]):
            refs = [c for j, c in enumerate(clips[speaker]) if j != k]
            target = np.mean([judge.embed(load_audio(r, EVAL_RATE)) for r in refs], axis=0)
            audio = load_audio(clip, vc.sample_rate)
            mel = vc.frontend(torch.from_numpy(audio))  # (n_mels, T)
            with torch.inference_mode():
                resynthesis = vc.vocoder.decode(mel.unsqueeze(0))[0].numpy()
            voice = vc.embed_speaker(refs, adapt_steps=args.adapt_steps)
            # The fitted voice keeps the encoder's own mean: the unfitted voice without reading the clips again.
            voice_unfitted = voice if voice.encoder_embedding is None else dataclasses.replace(
                voice, embedding=voice.encoder_embedding, encoder_embedding=None, adapt_steps=0)
            other = rng.choice([s for s in speakers if s != speaker])
            other_clip = clips[other][k % len(clips[other])]
            scores = [embed(audio, vc.sample_rate), embed(resynthesis, vc.sample_rate),
                      embed(vc.convert(clip, voice, pitch=pitch).numpy(), vc.sample_rate),
                      embed(vc.convert(clip, voice_unfitted, pitch=pitch).numpy(), vc.sample_rate),
                      embed(vc.convert(other_clip, voice, pitch=pitch).numpy(), vc.sample_rate),
                      embed(load_audio(other_clip, vc.sample_rate), vc.sample_rate)]
            for name, vector in zip(rows, scores):
                rows[name].append(cosine(vector, target))
        print(f"{speaker}: " + ", ".join(f"{name} {values[-1]:.3f}" for name, values in rows.items()), flush=True)
    n = len(rows["real"])
    print(f"\n{len(speakers)} speakers, {n} left-out clips, pitch {args.pitch}; judge: Resemblyzer, against the "
          "mean of the other clips")
    print("| row | similarity, mean ± s.e. | at or above the EER threshold |")
    print("|---|---|---|")
    for name, values in rows.items():
        values = np.asarray(values)
        print(f"| {name} | {values.mean():.3f} ± {values.std(ddof=1) / np.sqrt(n):.3f} | "
              f"{100 * np.mean(values >= EER_THRESHOLD):.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
