"""How the account's capital is split across the groups' prod books (pure).

``trading.allocation``:

* ``equal_risk`` (the default): each group gets a weight proportional to the inverse of its
  volatility (the per-bar volatility of its symbols' equal-weighted returns), so that every
  group puts about the same risk on the account; a group whose volatility is unknown yet gets
  the median group's.
* ``equal``: the same share for every group.

Weights are over every group the appliance serves, whether or not it has a prod model yet: a
group without one leaves its share in the house's free cash. A prod book receives its share of
the account's equity when it opens and keeps it (its P&L is its own); the share is not
rebalanced while the book runs.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

RULES = ("equal_risk", "equal")


def group_volatility(returns: Sequence[np.ndarray] | np.ndarray) -> float | None:
    """Per-bar volatility of the equal-weighted returns of a group's symbols (aligned from the
    end), or None with fewer than 20 common bars. An (symbols, bars) array is taken as it is
    (:meth:`appliance.bar_book.BarBook.aligned_returns`: already aligned)."""
    if not (isinstance(returns, np.ndarray) and returns.ndim == 2):
        series = [np.asarray(r, dtype=np.float64) for r in returns if len(r)]
        n = min((len(r) for r in series), default=0)
        returns = np.array([r[-n:] for r in series]) if series else np.zeros((0, 0))
    if returns.shape[0] == 0 or returns.shape[1] < 20:
        return None
    vol = float(np.std(np.mean(returns, axis=0), ddof=1))
    return vol if math.isfinite(vol) and vol > 0 else None


def weights(vols: Mapping[str, float | None], rule: str = "equal_risk") -> dict[str, float]:
    """Each group's share of the account (they sum to 1)."""
    if rule not in RULES:
        raise ValueError(f"allocation rule {rule!r}; choose one of {', '.join(RULES)}")
    groups = sorted(vols)
    if not groups:
        return {}
    if rule == "equal":
        return {g: 1.0 / len(groups) for g in groups}
    known = [v for v in vols.values() if v is not None]
    fill = float(np.median(known)) if known else 1.0
    inverse = {g: 1.0 / (vols[g] if vols[g] is not None else fill) for g in groups}
    total = sum(inverse.values())
    return {g: w / total for g, w in inverse.items()}
