"""The disk guard's rule (pure): what to free when the state dir's disk is too full.

Archiving a model deletes its ONNX file, which is small; the Parquet lake is usually what fills
a disk. So the guard first measures what archiving would free. When that covers the overflow,
or the models' artifacts weigh more than the lake, it archives the worst ``archive_fraction`` of
the models that have had their verdict (retired and rejected, never pinned, never a candidate,
a shadow or prod) by validation Sharpe. Otherwise the lake is what fills the disk: deleting
models would free almost nothing, so it trims the lake's oldest days instead (and the caller
raises an incident, because a disk that fills with market data needs an operator).

It runs at most once per nightly training run, never on every check, so a disk that stays full
cannot eat each new model as it arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

ARCHIVABLE = ("retired", "rejected")


@dataclass(frozen=True)
class ModelFiles:
    model_id: str
    mode: str
    sharpe: float | None  # validation Sharpe (the training record)
    pinned: bool
    bytes: int  # what deleting its model file frees


@dataclass(frozen=True)
class DiskPlan:
    action: Literal["none", "archive", "trim_lake"]
    reason: str
    archive: tuple[str, ...] = ()
    frees_bytes: int = 0  # what the archive would free (0 for trim_lake: the lake measures it)


def plan(used_fraction: float, threshold: float, total_bytes: int,
         models: Sequence[ModelFiles], lake_bytes: int, archive_fraction: float) -> DiskPlan:
    """What to do about a disk that is ``used_fraction`` full (see the module docstring)."""
    if not used_fraction > threshold:
        return DiskPlan("none", f"disk {used_fraction:.0%} <= {threshold:.0%}")
    overflow = int((used_fraction - threshold) * total_bytes)
    eligible = [m for m in models if m.mode in ARCHIVABLE and not m.pinned]
    eligible.sort(key=lambda m: (m.sharpe is not None and not math.isnan(m.sharpe),
                                 m.sharpe if m.sharpe is not None else 0.0, m.model_id))
    victims = eligible[:math.ceil(len(eligible) * archive_fraction)] if eligible else []
    frees = sum(m.bytes for m in victims)
    artifacts = sum(m.bytes for m in models)
    head = f"disk {used_fraction:.0%} > {threshold:.0%} ({overflow:,} bytes over)"
    if victims and (frees >= overflow or artifacts >= lake_bytes):
        return DiskPlan("archive", f"{head}: archiving {len(victims)} model(s) with the worst "
                        f"validation Sharpe frees {frees:,} bytes", tuple(m.model_id
                                                                          for m in victims),
                        frees)
    return DiskPlan("trim_lake", f"{head}: the lake ({lake_bytes:,} bytes) fills the disk; "
                    f"archiving models would free {frees:,} bytes")
