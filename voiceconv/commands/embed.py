"""voiceconv embed REF [REF...] -o voice.spk: embed a target voice once, reuse it with --speaker.

``voiceconv embed --blend a.spk=0.5 b.spk=0.5 -o mix.spk`` makes a new voice between others."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="*", metavar="REF", help="reference clips of one voice (averaged)")
    parser.add_argument("--blend", nargs="+", metavar="VOICE=WEIGHT",
                        help="instead of REFs: a new voice blended from others, e.g. --blend a.spk=0.7 b.spk=0.3 "
                        "(each VOICE a .spk file or one reference clip; weights >= 0 that sum to 1)")
    parser.add_argument("-o", "--output", required=True, help="speaker file to write (.spk)")
    parser.add_argument("--name", default="", help="a name stored in the file (default: the first clip's stem)")
    parser.add_argument("--no-trim", action="store_true", help="keep leading/trailing silence of the clips")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing speaker file")
    from voiceconv.commands.convert import add_model_arguments

    add_model_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    from voiceconv.convert.speaker import SPEAKER_SUFFIX
    from voiceconv.errors import VoiceconvError

    output = Path(args.output)
    if output.suffix.lower() != SPEAKER_SUFFIX:
        raise VoiceconvError(f"{output}: speaker files end in {SPEAKER_SUFFIX}; e.g. -o voice.spk")
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    from voiceconv.commands.convert import load_converter

    if bool(args.refs) == bool(args.blend):
        raise VoiceconvError("give either reference clips (voiceconv embed ref1.wav ref2.wav -o voice.spk) or "
                             "--blend a.spk=0.5 b.spk=0.5, not both")
    weights = []
    for item in args.blend or []:
        voice, separator, weight = item.rpartition("=")
        try:
            weights.append((voice, float(weight)))
        except ValueError:
            separator = ""
        if not separator or not voice:
            raise VoiceconvError(f"--blend {item}: write VOICE=WEIGHT, e.g. --blend a.spk=0.5 b.spk=0.5")
    vc = load_converter(args)
    if weights:
        speaker = vc.blend_speakers(weights, name=args.name)
    else:
        speaker = vc.embed_speaker(args.refs, name=args.name, trim=not args.no_trim)
    speaker.save(output, overwrite=args.overwrite)
    print(f"wrote {output}: {speaker.describe()}; model {speaker.model_sha256[:12]}")
    return 0
