"""Files that appear whole or not at all: written under a temporary name beside their
destination, then renamed into place (`os.replace`, atomic on POSIX filesystems)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable


def partial_name(path: Path) -> Path:
    """The temporary name a file is written under before its rename: hidden, beside `path`, and
    unique to this host and process, so that hosts sharing a directory never write one file."""
    return path.with_name(f".{path.name}.partial-{socket.gethostname()}-{os.getpid()}")


def write_atomically(path, write: Callable[[Path], None], durable: bool = False, exclusive: bool = False) -> Path:
    """`write(tmp)` fills a temporary file, which is then renamed to `path`: a crash leaves the
    old file or the new one, never a torn one. `durable` also flushes the file and then the
    directory entry to disk (fsync) before returning, so that a commit survives a power loss or
    a preempted VM, not only a killed process. `exclusive` never replaces an existing `path`
    (FileExistsError instead): the file is linked into place, an atomic create-if-absent, so of
    several processes writing it at once exactly one succeeds."""
    path = Path(path)
    tmp = partial_name(path)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path, text: str, durable: bool = False, exclusive: bool = False) -> Path:
    """`write_atomically` for a text file (UTF-8)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable, exclusive)
