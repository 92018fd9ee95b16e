"""File helpers that every layer shares: ``data`` is the bottom one (``models`` and
``appliance`` import it, it imports neither), so they live here."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB blocks (a model or a backed-up
    DuckDB file need not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync the file or directory at ``path``, opened read-only: a directory's, so that files
    created, renamed or deleted in it stay so after a crash; a file's, when it was written
    through a handle that is closed already (pyarrow's, for one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
