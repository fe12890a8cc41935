"""One atomic file write for everything voiceconv saves (audio, ``.spk`` voices, checkpoints, reports).

A file is written under a temporary name beside its destination, flushed to disk, given the mode
a plain ``open()`` would have given it under the current umask, and renamed over the destination,
so a reader (or a re-run after a crash) sees either the old file or the complete new one.
``tempfile.mkstemp`` alone would leave every output private to its owner (mode 0600).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere the only portable way is to set and restore it (a brief, harmless window).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permission bits ``open(path, "w")`` gives a new file: 0o666 minus the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it becomes ``path``.

    ``suffix`` keeps an extension on the temporary name for writers that infer the format from it.
    On any error (or Ctrl-C) the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.chmod(temp, default_file_mode())
        with open(temp, "rb") as written:  # fsync before rename: a crash must not leave an empty file
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
