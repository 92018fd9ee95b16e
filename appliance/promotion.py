"""The pure promotion rule: does a model that traded in shadow replace the group's prod model?

The user's rule: promote when shadow Sharpe > prod Sharpe − 0.2 after 7 days in shadow, with
enough trades. Where no prod model exists for the group the comparison is against 0, without
the margin: the margin is a tolerance for noise between two models that both trade, not a
licence to put a losing model into production.

A deflated Sharpe ratio (DSR) guard refuses a high Sharpe that luck produced: a short, lucky run,
or the best of many tries. The DSR (:func:`models.metrics.deflated_sharpe_ratio`) is the
probability that the true Sharpe exceeds what the best of the group's ``trials`` skill-less
candidates would show by chance, so each shadow the group tried raises the bar for the next
(at one trial it is the plain PSR against 0). ``dsr_threshold = 0`` (config
``shadow.psr_threshold``) switches it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from models.metrics import probabilistic_sharpe_ratio, sharpe_ratio, trade_count


@dataclass(frozen=True)
class PromotionRules:
    sharpe_margin: float = 0.2  # shadow may trail prod by this much and still win
    min_trades: int = 20  # fewer trades are too few to judge a Sharpe on
    dsr_threshold: float = 0.95  # the DSR must exceed this; 0 turns the guard off
    period_days: float = 7.0  # days in shadow before any verdict


@dataclass(frozen=True)
class ShadowRecord:
    model_id: str
    days_in_shadow: float  # market (clock) days, so that sim mode passes them quickly
    sharpe: float  # annualised, from shadow_stats
    trades: int
    psr: float  # P(true Sharpe > 0), published next to the DSR
    trials: int  # candidates the group tried in the look-back window, this one included
    dsr: float  # the PSR against the expected best Sharpe of ``trials`` skill-less tries


@dataclass(frozen=True)
class Decision:
    action: Literal["promote", "reject", "wait"]
    reason: str


def decide(shadow: ShadowRecord, prod_sharpe: float | None, *, deploys_frozen: bool,
           prod_pinned: bool, rules: PromotionRules) -> Decision:
    """Promote, reject or keep waiting, with a reason for the audit journal.

    Waiting comes first: before the shadow period is over there is no verdict; a deploy freeze
    (the drawdown guard) or an operator's pin of the prod model blocks a promotion without
    condemning the candidate, so it waits too. After the period the candidate is promoted when
    every condition holds and rejected otherwise, the reason naming each failed condition with
    its numbers.
    """
    if shadow.days_in_shadow < rules.period_days:
        return Decision("wait", f"in shadow {shadow.days_in_shadow:g} of "
                                f"{rules.period_days:g} days")
    if deploys_frozen:
        return Decision("wait", "deploys frozen")
    if prod_pinned:
        return Decision("wait", "prod model pinned")
    if prod_sharpe is None:
        bar, against = 0.0, "0 (no prod model)"
    else:
        bar = prod_sharpe - rules.sharpe_margin
        against = f"prod {prod_sharpe:.3f} - margin {rules.sharpe_margin:g} = {bar:.3f}"
    failed = []
    if not shadow.sharpe > bar:  # NaN fails
        failed.append(f"sharpe {shadow.sharpe:.3f} <= {against}")
    if shadow.trades < rules.min_trades:
        failed.append(f"trades {shadow.trades} < {rules.min_trades}")
    over = f"over {shadow.trials} trial{'' if shadow.trials == 1 else 's'}"
    if rules.dsr_threshold != 0 and not shadow.dsr > rules.dsr_threshold:  # NaN fails
        failed.append(f"DSR {shadow.dsr:.3f} <= {rules.dsr_threshold:g} {over}")
    if failed:
        return Decision("reject", "; ".join(failed))
    return Decision("promote", f"sharpe {shadow.sharpe:.3f} > {against}, "
                               f"{shadow.trades} trades, DSR {shadow.dsr:.3f} {over}")


def shadow_stats(net_returns: Sequence[float], positions: Sequence[float],
                 periods_per_year: float) -> tuple[float, int, float]:
    """(annualised Sharpe, trades, PSR against a zero Sharpe) of a shadow run's per-bar series.

    The same metrics as the backtests (models.metrics), so shadow and prod are scored alike.
    PSR is NaN for fewer than two bars or no variance, which the PSR guard treats as a failure.
    """
    r = np.asarray(net_returns, dtype=np.float64)
    p = np.asarray(positions, dtype=np.float64)
    if len(r) != len(p):
        raise ValueError(f"{len(r)} returns but {len(p)} positions")
    return (sharpe_ratio(r, periods_per_year), trade_count(p),
            probabilistic_sharpe_ratio(r, 0.0, periods_per_year))
