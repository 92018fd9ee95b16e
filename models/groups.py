"""Symbol groups: which symbols one model serves (pure).

A model is trained on the pooled, scale-free features of its group's symbols and trades each of
them. Groups are cut first by liquidity tier (a $5B pair and a $15M pair do not trade alike),
then, inside a tier, by return correlation (hierarchical clustering on 1 − ρ), so that no group
is larger than ``max_size``. The result depends only on its inputs: the same market gives the
same groups, and group names are stable while membership is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform


@dataclass(frozen=True)
class GroupingRules:
    tiers_usd: tuple[float, ...] = (500e6, 50e6)  # tier 1 above the first bound, and so on
    max_size: int = 8


@dataclass(frozen=True)
class Group:
    name: str
    symbols: tuple[str, ...]


def liquidity_tier(turnover_24h: float, bounds: tuple[float, ...]) -> int:
    for i, bound in enumerate(bounds):
        if turnover_24h > bound:
            return i + 1
    return len(bounds) + 1


def correlation_clusters(symbols: list[str], returns: dict[str, np.ndarray],
                         n_clusters: int) -> list[list[str]]:
    """Split ``symbols`` into at most ``n_clusters`` clusters of correlated returns."""
    if n_clusters <= 1 or len(symbols) <= 1:
        return [list(symbols)]
    n = min(len(returns[s]) for s in symbols)
    if n < 3:
        return [list(symbols[i::n_clusters]) for i in range(n_clusters)]
    matrix = np.vstack([returns[s][-n:] for s in symbols])
    corr = np.nan_to_num(np.corrcoef(matrix), nan=0.0)
    dist = np.clip(1.0 - corr, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="average"),
                      n_clusters, criterion="maxclust")
    clusters: dict[int, list[str]] = {}
    for sym, label in zip(symbols, labels):
        clusters.setdefault(int(label), []).append(sym)
    return sorted(clusters.values(), key=lambda c: sorted(c)[0])


def _balance(clusters: list[list[str]], max_size: int) -> list[list[str]]:
    out: list[list[str]] = []
    for c in clusters:
        for i in range(0, len(c), max_size):
            out.append(c[i:i + max_size])
    return out


def make_groups(turnovers: dict[str, float], returns: dict[str, np.ndarray],
                rules: GroupingRules = GroupingRules()) -> list[Group]:
    """Groups of the given symbols; ``returns`` holds each symbol's recent log returns."""
    tiers: dict[int, list[str]] = {}
    for sym in sorted(turnovers):
        tiers.setdefault(liquidity_tier(turnovers[sym], rules.tiers_usd), []).append(sym)
    groups: list[Group] = []
    for tier in sorted(tiers):
        members = tiers[tier]
        k = math.ceil(len(members) / rules.max_size)
        usable = [s for s in members if s in returns]
        clusters = correlation_clusters(usable, returns, k) if usable else []
        rest = [s for s in members if s not in returns]
        if rest:
            clusters.append(rest)
        for j, cluster in enumerate(_balance(clusters, rules.max_size)):
            groups.append(Group(f"t{tier}-{chr(ord('a') + j)}", tuple(sorted(cluster))))
    return groups
