"""The `voiceconv` entry point: help texts, exit codes and one-line errors."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import pytest

from voiceconv import __version__
from voiceconv.cli import COMMANDS, _available_commands, build_parser, main


def _run(*args, env=None):
    """Run the installed console script (falling back to ``python -m voiceconv.cli``)."""
    exe = shutil.which("voiceconv", path=os.path.dirname(sys.executable))
    command = [exe] if exe else [sys.executable, "-m", "voiceconv.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser([name])
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def test_top_level_help_lists_the_subcommands():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    available = _available_commands()
    assert "prepare" in available
    flat = " ".join(result.stdout.split())  # argparse wraps long help lines
    for name, (_, help_text) in available.items():
        assert f" {name} {help_text}" in flat
    # Commands whose module does not exist yet are not advertised.
    for name in set(COMMANDS) - set(available):
        assert f"\n    {name} " not in result.stdout
    # With no command at all, the same help and success.
    bare = _run()
    assert bare.returncode == 0 and "prepare" in bare.stdout


def test_prepare_help_documents_every_option():
    result = _run("prepare", "--help")
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())  # argparse wraps lines
    actions = [a for a in _subparser("prepare")._actions if not isinstance(a, argparse._HelpAction)]
    assert {s for a in actions for s in a.option_strings} == {"--out", "--config", "--workers", "--shard-size",
                                                              "--no-trim", "--quiet"}
    for action in actions:
        assert action.help and len(action.help) >= 10, f"{action.dest} has no real help text"
        for option in action.option_strings or [action.dest]:
            assert option in flat
        assert " ".join(action.help.split()).split("(default")[0].strip()[:40] in flat
    assert "path,speaker[,transcript]" in flat and "(default: 64)" in flat


@pytest.mark.parametrize("name", sorted(_available_commands()))
def test_every_command_has_help_for_every_option(name):
    for action in _subparser(name)._actions:
        assert action.help, f"voiceconv {name}: {action.option_strings or action.dest} has no help text"


def _exit_code(argv) -> int:
    """``main(argv)``'s exit code, whether returned or raised by argparse as SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_version_and_bad_usage(capsys):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"voiceconv {__version__}"
    assert _exit_code(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert _exit_code(["prepare"]) == 2
    assert "required" in capsys.readouterr().err
    assert _exit_code(["prepare", "m.csv", "--out", "x", "--workers", "0"]) == 2
    assert "--workers: must be at least 1, got 0" in capsys.readouterr().err
    assert _exit_code(["prepare", "m.csv", "--out", "x", "--shard-size", "two"]) == 2
    assert "--shard-size: expected a whole number, got 'two'" in capsys.readouterr().err


def test_user_errors_are_one_line_without_traceback(tmp_path):
    """Through the real console script: exit code 2 and exactly one line on stderr."""
    result = _run("prepare", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == f"voiceconv prepare: error: {tmp_path / 'absent.csv'}: manifest not found\n"
    assert "Traceback" not in result.stderr


def test_debug_env_lets_the_exception_through(tmp_path, monkeypatch):
    from voiceconv.errors import VoiceconvError

    monkeypatch.setenv("VOICECONV_DEBUG", "1")
    with pytest.raises(VoiceconvError, match="manifest not found"):
        main(["prepare", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "out")])


def test_main_in_process_returns_exit_codes(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
