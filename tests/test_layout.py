"""The package layout reads as the architecture (issue 15): layers as folders, imports pointing down,
every module importable on its own, the README's imports and docs/ARCHITECTURE.md's files true."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from test_imports import PACKAGE, import_graph

REPO = PACKAGE.parent

# What each layer may import from the package (besides itself). ``core`` is the top-level modules.
ALLOWED = {
    "core": {"core"},
    "models": {"core"},
    "vocoder": {"core", "models"},
    "convert": {"core", "models", "vocoder"},
    "training": {"core", "models", "vocoder"},
    "evaluation": {"core", "models", "vocoder", "convert", "training"},
    "demo": {"core", "models", "vocoder", "convert", "evaluation", "training"},
    "commands": {"core", "models", "vocoder", "convert", "training", "evaluation", "demo"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] != "pretrained" and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "core"  # the top-level modules, and pretrained/ (paths of the shipped weights)


def test_the_layers_are_folders():
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert {"convert", "training", "models", "vocoder", "evaluation", "demo", "commands"} <= folders
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    # Only the shared core (and the package entry points) stays at the top level.
    assert top == ["__init__", "atomic", "audio", "checkpoint", "cli", "config", "errors", "features"]


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in import_graph().items():
        if module == "voiceconv":
            continue
        for target in targets:
            if target == "voiceconv":
                continue
            if layer(target) != layer(module) and layer(target) not in ALLOWED[layer(module)]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_the_layer_check_finds_an_upward_import():
    assert layer("voiceconv.audio") == "core" and layer("voiceconv.convert.engine") == "convert"
    assert "convert" not in ALLOWED["training"] and "training" not in ALLOWED["convert"]


def all_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """One interpreter loads the third-party libraries once; each module is then imported in a forked
    child whose ``sys.modules`` holds no voiceconv module, so a module that only works after another
    one was imported first fails here."""
    if not hasattr(__import__("os"), "fork"):
        pytest.skip("needs os.fork")
    script = textwrap.dedent("""
        import importlib, os, sys
        import numpy, soundfile, torch  # noqa: F401  (shared by nearly every module; loaded once)
        assert not [m for m in sys.modules if m.startswith("voiceconv")]
        failed = []
        for name in sys.argv[1:]:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException as error:
                    print(f"{name}: {type(error).__name__}: {error}", flush=True)
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status:
                failed.append(name)
        print("FAILED", " ".join(failed))
    """)
    modules = all_modules()
    assert len(modules) > 60
    result = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, cwd=REPO,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("FAILED"), result.stdout[-3000:]


def python_imports(markdown: str) -> list[str]:
    """``from voiceconv... import ...`` / ``import voiceconv...`` lines inside a Markdown text's code blocks."""
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif in_code and re.match(r"\s*(from voiceconv[\w.]* import |import voiceconv)", line):
            lines.append(line.strip())
    return lines


def test_every_import_the_readme_shows_works():
    lines = python_imports((REPO / "README.md").read_text())
    assert "from voiceconv import VoiceConverter, Vocoder" in lines
    for line in lines:
        exec(line, {})  # noqa: S102  (our own README)


def architecture_paths() -> list[str]:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    return [p for p in re.findall(r"`([\w./-]+)`", text) if "/" in p and not p.startswith("loss/")]


def test_every_file_architecture_md_names_exists():
    paths = architecture_paths()
    assert "voiceconv/convert/converter.py" in paths and len(paths) > 40
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_module_is_on_the_architecture_map():
    named = set(architecture_paths())
    folders = {p.rstrip("/") for p in named if p.endswith("/")}
    unmapped = [str(path.relative_to(REPO)) for path in PACKAGE.rglob("*.py")
                if path.name != "__init__.py" and str(path.relative_to(REPO)) not in named
                and str(path.parent.relative_to(REPO)) not in folders]
    assert not unmapped, f"modules missing from docs/ARCHITECTURE.md: {unmapped}"
