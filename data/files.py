"""File helpers that every layer shares: ``data`` is the bottom one (``models`` and
``appliance`` import it, it imports neither), so they live here."""

from __future__ import annotations

import hashlib
import json
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


def read_json_dict(path: Path) -> dict:
    """The JSON object in ``path``; ``{}`` when it is missing or unreadable (a schedule that
    cannot be read is started afresh rather than stopping its service)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, both fsynced,
    so that a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(data, indent=1))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
