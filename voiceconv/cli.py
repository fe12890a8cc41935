"""The ``voiceconv`` command line.

Each subcommand lives in ``voiceconv/commands/<name>.py``; only the chosen one is imported, so
``voiceconv --help`` is instant. Errors a user can fix (``VoiceconvError``/``ValueError``/missing
files) print as one line on stderr with exit code 2; set ``VOICECONV_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from voiceconv import __version__

# name -> (module under voiceconv.commands, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("convert", "convert recordings to a target voice"),
    "batch": ("batch", "convert many source/target pairs from a CSV (resumable, shardable)"),
    "embed": ("embed", "embed reference clips into a reusable .spk speaker file"),
    "prepare": ("prepare", "compute and cache log-mels for a corpus manifest"),
    "train": ("train", "train a voice conversion model"),
    "train-vocoder": ("train_vocoder", "train or fine-tune a neural vocoder"),
    "import-vocoder": ("import_vocoder", "import public HiFi-GAN weights into voiceconv's format"),
    "probe": ("probe", "measure speaker information in content codes and speaker vectors"),
    "evaluate": ("evaluate", "evaluate conversions with independent judges and write a report"),
    "demo": ("demo", "start the Gradio web demo"),
}


def _available_commands() -> dict[str, tuple[str, str]]:
    """Only subcommands whose module exists are offered (keeps --help honest during development)."""
    return {
        name: spec
        for name, spec in COMMANDS.items()
        if importlib.util.find_spec(f"voiceconv.commands.{spec[0]}") is not None
    }


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voiceconv",
        description="One-shot voice conversion (AdaIN-VC family). Run 'voiceconv COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"voiceconv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = _available_commands()
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in commands.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"voiceconv.commands.{module_name}")
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as error:
        if os.environ.get("VOICECONV_DEBUG"):
            raise
        print(f"voiceconv {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
