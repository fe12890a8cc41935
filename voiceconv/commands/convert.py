"""voiceconv convert SRC [SRC...] --target REF [REF...] -o OUT: re-voice recordings as a target speaker.

OUT is a file for one source, or a directory (created if needed) for several, where each output
is named after its source (``<stem>.wav``). Existing outputs are never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --vocoder, --device: shared by convert, batch and embed."""
    parser.add_argument("--model", default=None, help="VC model directory (config.json + model.safetensors), or a "
                        "directory holding vc/ and vocoder/ (default: the shipped model)")
    parser.add_argument("--vocoder", default=None, help="vocoder directory, or 'griffin-lim' (default: the vocoder "
                        "next to --model or the shipped one; Griffin-Lim with a warning if there is none)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                        help="steps that fit a new target voice to its reference clips, a few seconds once per "
                        "voice (default: 10; 0: the speaker encoder's vector as is, faster and less like the "
                        "target)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SRC", help="recordings to convert (WAV/FLAC/OGG/MP3, any rate)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target", nargs="+", metavar="REF", help="reference clip(s) of the target voice; several "
                        "clips are averaged (3 clips of 3-10 s work well)")
    target.add_argument("--speaker", metavar="SPK", help="a .spk file from 'voiceconv embed' instead of --target")
    parser.add_argument("-o", "--output", required=True, help="output file (one source) or directory")
    parser.add_argument("--pitch", default="off", help="'auto' (move the source's pitch range to the target's), "
                        "'off', or a shift in semitones such as -3 or +4.5 "
                        "(default: off, chosen from measurements: see README)")
    add_model_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def output_paths(sources: list[str], output: str) -> list[Path]:
    """One output path per source; a directory when there are several sources or OUT looks like one."""
    from voiceconv.convert.converter import OUTPUT_FORMATS
    from voiceconv.errors import VoiceconvError

    out = Path(output)
    as_dir = len(sources) > 1 or out.is_dir() or output.endswith(os.sep) or not out.suffix
    if not as_dir:
        return [out]
    if out.suffix.lower() in OUTPUT_FORMATS:
        raise VoiceconvError(f"{len(sources)} sources need a directory for -o, not the file {output}")
    paths = [out / (Path(src).stem + ".wav") for src in sources]
    clashes = sorted({p.name for p in paths if paths.count(p) > 1})
    if clashes:
        raise VoiceconvError(f"several sources would write {', '.join(clashes)}; convert them separately or rename")
    return paths


def load_converter(args):
    from voiceconv.convert.converter import VoiceConverter

    return VoiceConverter.from_pretrained(args.model, vocoder=args.vocoder, device=args.device,
                                          adapt_steps=getattr(args, "adapt_steps", None))


def run(args) -> int:
    from voiceconv.convert.pitch import parse_pitch

    pitch = parse_pitch(args.pitch)
    paths = output_paths(args.sources, args.output)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass "
                              "--overwrite to replace")
    vc = load_converter(args)
    # Every source is checked before the target is embedded: a bad source fails in seconds.
    for source in args.sources:
        vc.check_source(source)
    # The input check only warns: the conversion still runs (voiceconv.convert.input_check).
    for kind, clip in [*(("source", s) for s in args.sources), *(("reference", r) for r in args.target or [])]:
        report = vc.check_input(clip)
        if report is not None and report.warning:
            print(f"warning: {kind} {clip}: {report.warning} (input-check score {report.score:.1f}, "
                  f"threshold {report.threshold:.1f})", file=sys.stderr)
    speaker = vc.load_speaker(args.speaker) if args.speaker else vc.embed_speaker(args.target)
    print(f"target: {speaker.describe()}")
    for source, path in zip(args.sources, paths):
        start = time.perf_counter()
        vc.convert_to_file(source, speaker, path, pitch=pitch, overwrite=args.overwrite)
        import soundfile as sf

        seconds = sf.info(str(path)).duration
        elapsed = time.perf_counter() - start
        print(f"wrote {path} ({seconds:.2f} s of audio in {elapsed:.2f} s, real-time factor "
              f"{elapsed / max(seconds, 1e-9):.3f})")
    return 0
