"""File helpers that every layer shares: ``data`` is the bottom one (``models`` and
``appliance`` import it, it imports neither), so they live here."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB blocks (a model or a backed-up
    DuckDB file need not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
