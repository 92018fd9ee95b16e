"""Performance metrics of a per-bar net return series (one account: 1-D arrays).

Conventions, chosen once so that every model, shadow and benchmark is scored alike:

* Crypto trades around the clock: a year is 365 days of bars (``periods_per_year``).
* Sharpe and Sortino are per-bar ratios scaled by sqrt(periods per year); the risk-free rate is 0.
  A series with fewer than two bars or no variance carries no evidence: its Sharpe is 0.
* Drawdowns are measured on the equity curve with the starting equity 1 in front, so a loss on the
  first bar counts.
* A trade starts when a position is opened from flat or flipped to the other side; resizing on
  the same side or closing to flat does not start one.
* Hit rate is per bar: of the bars spent holding a position, the fraction whose net return was
  positive (a bar-level figure, independent of how trades are cut).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

_YEAR_MS = 365 * 86_400_000


def periods_per_year(interval_ms: int) -> float:
    """Bars in a 365-day year for bars of ``interval_ms`` milliseconds (1m -> 525600)."""
    if interval_ms <= 0:
        raise ValueError("interval_ms must be positive")
    return _YEAR_MS / interval_ms


def _series(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D series, got shape {a.shape}")
    return a


def sharpe_ratio(returns: np.ndarray, periods: float = 1.0) -> float:
    """mean / std (ddof=1) of per-bar returns, times sqrt(periods); 0 without variance."""
    r = _series(returns)
    if len(r) < 2:
        return 0.0
    sd = float(r.std(ddof=1))
    return 0.0 if sd == 0.0 else float(r.mean()) / sd * math.sqrt(periods)


def sortino_ratio(returns: np.ndarray, periods: float = 1.0) -> float:
    """mean / downside deviation, times sqrt(periods).

    Downside deviation = sqrt(mean(min(r, 0)^2)) over all bars. Without any losing bar it is
    +inf for a positive mean and 0 otherwise.
    """
    r = _series(returns)
    if len(r) == 0:
        return 0.0
    mean = float(r.mean())
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside == 0.0:
        return math.inf if mean > 0.0 else 0.0
    return mean / downside * math.sqrt(periods)


def equity_curve(returns: np.ndarray) -> np.ndarray:
    """Equity after each bar, starting from 1: cumprod(1 + r)."""
    return np.cumprod(1.0 + _series(returns))


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction of the peak (0.25 = -25%); >= 0."""
    e = _series(equity)
    if len(e) == 0:
        return 0.0
    peak = np.maximum.accumulate(e)
    return float(np.max(1.0 - e / peak))


def annualised_return(returns: np.ndarray, periods: float) -> float:
    """Compound annual growth rate of the equity that ``returns`` produce."""
    r = _series(returns)
    if len(r) == 0:
        return 0.0
    final = float(np.prod(1.0 + r))
    if final <= 0.0:
        return -1.0
    return final ** (periods / len(r)) - 1.0


def calmar_ratio(returns: np.ndarray, periods: float) -> float:
    """Annualised return / max drawdown (from starting equity 1); +inf or 0 without drawdown."""
    r = _series(returns)
    growth = annualised_return(r, periods)
    mdd = max_drawdown(np.concatenate([[1.0], equity_curve(r)]))
    if mdd == 0.0:
        return math.inf if growth > 0.0 else 0.0
    return growth / mdd


def turnover(position: np.ndarray) -> float:
    """Sum of |position changes|, the entry from flat included (2.0 = one full round trip)."""
    p = _series(position)
    return float(np.abs(np.diff(p, prepend=0.0)).sum())


def trade_count(position: np.ndarray) -> int:
    """Number of bars where a position is opened from flat or flipped to the other side."""
    side = np.sign(_series(position))
    prev = np.concatenate([[0.0], side[:-1]])
    return int(np.count_nonzero((side != 0.0) & (side != prev)))


def hit_rate(net: np.ndarray, position: np.ndarray) -> float:
    """Fraction of bars held in the market (position at the previous bar != 0) with net > 0.

    Rows follow the backtester: ``net[t]`` is earned by ``position[t-1]``. NaN if never in the
    market.
    """
    r, p = _series(net), _series(position)
    held = np.concatenate([[False], p[:-1] != 0.0])
    n = int(held.sum())
    return float(np.count_nonzero(r[held] > 0.0)) / n if n else math.nan


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def psr_from_moments(sharpe: float, benchmark: float, n: int, skew: float, kurtosis: float
                     ) -> float:
    """Probabilistic Sharpe ratio (Bailey & Lopez de Prado, 2012) from per-bar statistics.

    P(true Sharpe > benchmark) = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)),
    with SR, SR* per bar (not annualised), g3 the skewness and g4 the (non-excess) kurtosis of
    the returns (3 for a normal). NaN where it is undefined (n < 2 or a non-positive variance term).
    """
    var = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if n < 2 or not var > 0.0:
        return math.nan
    return _normal_cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(var))


def _sharpe_moments(r: np.ndarray) -> tuple[float, float, float] | None:
    """(per-bar Sharpe, skewness, non-excess kurtosis) of a series; None with fewer than two
    bars or without variance."""
    if len(r) < 2:
        return None
    mean, sd = float(r.mean()), float(r.std(ddof=1))
    if sd == 0.0:
        return None
    z = (r - mean) / float(r.std(ddof=0))
    return mean / sd, float(np.mean(z ** 3)), float(np.mean(z ** 4))


def probabilistic_sharpe_ratio(returns: np.ndarray, benchmark_sharpe: float = 0.0,
                               periods: float = 1.0) -> float:
    """PSR of per-bar ``returns`` against ``benchmark_sharpe`` annualised with ``periods``.

    Both Sharpe ratios are converted to per-bar values (divided by sqrt(periods)) before the
    formula, which is about the per-bar ratio and the number of bars. NaN with fewer than two
    bars or without variance.
    """
    r = _series(returns)
    moments = _sharpe_moments(r)
    if moments is None:
        return math.nan
    sharpe, skew, kurt = moments
    return psr_from_moments(sharpe, benchmark_sharpe / math.sqrt(periods), len(r), skew, kurt)


EULER_GAMMA = 0.5772156649015329


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """E[max] of ``n_trials`` independent Sharpe estimates whose true Sharpe is 0 and whose
    variance is ``variance`` (Bailey & Lopez de Prado, 2014, from extreme value theory):

        E[max SR] ~ sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))),

    g the Euler-Mascheroni constant. 0 for a single trial (nothing was selected).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if n_trials == 1:
        return 0.0
    inv = NormalDist().inv_cdf
    return math.sqrt(variance) * ((1.0 - EULER_GAMMA) * inv(1.0 - 1.0 / n_trials)
                                  + EULER_GAMMA * inv(1.0 - 1.0 / (n_trials * math.e)))


def deflated_sharpe_ratio(returns: np.ndarray, n_trials: int, periods: float = 1.0,
                          sharpe_variance: float | None = None) -> float:
    """Deflated Sharpe ratio (Bailey & Lopez de Prado, 2014): the PSR of per-bar ``returns``
    against the Sharpe the best of ``n_trials`` skill-less tries would show by luck alone.

        DSR = PSR(SR* = E[max SR]) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2))

    with SR per bar, T bars, g3 the skewness, g4 the kurtosis and E[max SR] from
    :func:`expected_max_sharpe` with V the variance of the trials' Sharpe ratios.

    V: ``sharpe_variance`` when the trials' Sharpe ratios are known (their variance, annualised
    with ``periods`` like the ratios; it is divided by ``periods`` to be per bar). When only N is
    known (the promotion rule's case: the earlier shadows traded other bars) V is the variance of
    this series' own Sharpe estimator, V = (1 - g3 SR + (g4 - 1)/4 SR^2) / (T - 1): the spread
    the trials' ratios would have from sampling noise alone on a record this long. Then the
    deflation is a shift of the PSR's z-score, DSR = Phi(z_PSR - E[max Z of N]), and a
    short, noisy record is deflated more in Sharpe terms than a long one.

    With ``n_trials = 1`` it equals the PSR against 0. NaN where the PSR is (fewer than two
    bars, no variance).
    """
    r = _series(returns)
    moments = _sharpe_moments(r)
    if moments is None:
        return math.nan
    sharpe, skew, kurt = moments
    if sharpe_variance is None:
        variance = (1.0 - skew * sharpe + (kurt - 1.0) / 4.0 * sharpe * sharpe) / (len(r) - 1)
        if not variance > 0.0:
            return math.nan
    else:
        variance = sharpe_variance / periods
    return psr_from_moments(sharpe, expected_max_sharpe(n_trials, variance), len(r), skew, kurt)


def summarize(net: np.ndarray, position: np.ndarray, interval_ms: int,
              benchmark_sharpe: float = 0.0) -> dict[str, Any]:
    """Every metric of one account's backtest, as plain floats and ints (for metrics.json)."""
    r, p = _series(net), _series(position)
    periods = periods_per_year(interval_ms)
    equity = np.concatenate([[1.0], equity_curve(r)])
    years = len(r) / periods
    return {
        "bars": len(r),
        "total_return": float(equity[-1] - 1.0),
        "annualised_return": annualised_return(r, periods),
        "sharpe": sharpe_ratio(r, periods),
        "sortino": sortino_ratio(r, periods),
        "max_drawdown": max_drawdown(equity),
        "calmar": calmar_ratio(r, periods),
        "turnover": turnover(p),
        "turnover_per_year": turnover(p) / years if years else 0.0,
        "trades": trade_count(p),
        "hit_rate": hit_rate(r, p),
        "psr": probabilistic_sharpe_ratio(r, benchmark_sharpe, periods),
    }
