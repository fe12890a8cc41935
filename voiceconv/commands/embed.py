"""voiceconv embed REF [REF...] -o voice.spk: embed a target voice once, reuse it with --speaker."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="+", metavar="REF", help="reference clips of one voice (averaged)")
    parser.add_argument("-o", "--output", required=True, help="speaker file to write (.spk)")
    parser.add_argument("--name", default="", help="a name stored in the file (default: the first clip's stem)")
    parser.add_argument("--no-trim", action="store_true", help="keep leading/trailing silence of the clips")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing speaker file")
    from voiceconv.commands.convert import add_model_arguments

    add_model_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    from voiceconv.errors import VoiceconvError
    from voiceconv.speaker import SPEAKER_SUFFIX

    output = Path(args.output)
    if output.suffix.lower() != SPEAKER_SUFFIX:
        raise VoiceconvError(f"{output}: speaker files end in {SPEAKER_SUFFIX}; e.g. -o voice.spk")
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    from voiceconv.commands.convert import load_converter

    vc = load_converter(args)
    speaker = vc.embed_speaker(args.refs, name=args.name, trim=not args.no_trim)
    speaker.save(output, overwrite=args.overwrite)
    print(f"wrote {output}: {speaker.describe()}; model {speaker.model_sha256[:12]}")
    return 0
