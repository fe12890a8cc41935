"""What each pitch option does to speaker similarity and F0: to choose the default of ``--pitch``.

Usage::

    python benchmarks/pitch_options.py --model exp/vc --vocoder exp/vocoder --pairs eval_pairs.csv
    python benchmarks/pitch_options.py --model exp/vc --pairs eval_pairs.csv --options off auto -6 -3 3 6

``--pairs``: CSV with ``source,target`` (target clips ``;``-separated), as for ``voiceconv batch``.
For every pair and option it converts the source and reports, averaged over pairs:

- ``cosine``: cosine(converted, target) of the model's own speaker vectors (the target vector is
  the mean over all the target's clips, the one the conversion used);
- ``|dF0| st``: distance in semitones between the converted speech's mean log-F0 and the target's;
- ``shift st``: the shift the option applied (``auto`` varies per pair).
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def measure_pitch_options(vc, pairs, options) -> dict[str, dict[str, float]]:
    """``pairs``: [(source, [refs])]; ``options``: pitch values for ``convert``. Returns mean figures per option."""
    from voiceconv.convert.pitch import F0Stats, parse_pitch

    figures = {str(o): {"cosine": [], "f0_st": [], "shift_st": []} for o in options}
    for source, refs in pairs:
        speaker = vc.embed_speaker(refs)
        for option in options:
            pitch = parse_pitch(option)
            shift = vc.auto_pitch(source, speaker) if pitch == "auto" else (pitch or 0.0)
            converted = vc.convert(source, speaker, pitch=pitch)
            entry = figures[str(option)]
            entry["cosine"].append(vc.similarity(converted, speaker))
            entry["shift_st"].append(shift)
            stats = F0Stats().update(converted.numpy(), vc.sample_rate)
            if stats.reliable and speaker.has_pitch:
                entry["f0_st"].append(abs(12 * (stats.mean - speaker.log_f0_mean) / math.log(2)))
    return {name: {k: float(np.mean(v)) if v else math.nan for k, v in entry.items()}
            for name, entry in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="VC model directory")
    parser.add_argument("--vocoder", default=None, help="vocoder directory or 'griffin-lim'")
    parser.add_argument("--pairs", required=True, help="CSV with source,target (target clips ';'-separated)")
    parser.add_argument("--options", nargs="+", default=["off", "auto", "-4", "4"], help="pitch options to compare")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    from speaker_similarity import read_pair_list

    from voiceconv.convert.converter import VoiceConverter

    vc = VoiceConverter.from_pretrained(args.model, vocoder=args.vocoder, device=args.device)
    pairs = read_pair_list(args.pairs)
    results = measure_pitch_options(vc, pairs, args.options)
    print(f"# {len(pairs)} pairs")
    print(f"{'option':>8} {'cosine':>8} {'|dF0| st':>9} {'shift st':>9}")
    for name, r in results.items():
        print(f"{name:>8} {r['cosine']:8.4f} {r['f0_st']:9.2f} {r['shift_st']:9.2f}")


if __name__ == "__main__":
    main()
