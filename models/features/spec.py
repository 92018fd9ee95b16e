"""The vocabulary a feature definition is written in; both engines implement it.

A feature set is two kinds of definition:

* ``inputs(bar, prev)``: per-bar series, element-wise functions of one candle and the candle
  before it (close, one-bar log return, true range, ...). The batch engine evaluates it over
  columns of a whole history; the live engine over one new candle per symbol, and keeps the last
  ``history`` values of every input in its ring buffer.
* indicators: functions of a ``Series``, which hands out the inputs at the row(s) being computed
  and the handful of time operations that need history (a lag, a window statistic, an
  exponential smoother). Everything else in an indicator is element-wise numpy, so the same
  function body serves a whole dataset (arrays over time) and a bar close (arrays over symbols).

Adding an indicator is one ``@indicator`` function (and, if it needs a new per-bar series, one
entry in ``inputs``). A new kind of time operation (a rolling max, say) is one method on each
engine's ``Series``, next to the existing ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

OPEN_TIME, OPEN, HIGH, LOW, CLOSE, VOLUME, TURNOVER = range(7)
N_COLUMNS = 7

# A window whose spread is below this fraction of its mean is treated as flat: summing equal
# values can leave a rounding residue of ~1e-16 that must not turn into a z-score of order 1.
FLAT_REL = 1e-10


class Bar:
    """Candle columns: each attribute holds one value per row (per time in the batch engine,
    per symbol in the live one)."""

    __slots__ = ("open_time", "open", "high", "low", "close", "volume", "turnover")

    def __init__(self, columns: Sequence[np.ndarray] | np.ndarray) -> None:
        (self.open_time, self.open, self.high, self.low, self.close, self.volume,
         self.turnover) = columns


class Series(Protocol):
    """What an indicator reads. Arrays are over time (batch) or over symbols (live)."""

    def __call__(self, name: str) -> np.ndarray:
        """The per-bar input ``name`` at the row(s) being computed."""

    def lag(self, name: str, k: int) -> np.ndarray:
        """Input ``name`` k bars earlier; NaN where that is before the first bar."""

    def std(self, name: str, w: int, ddof: int) -> np.ndarray:
        """Standard deviation of the last w values of ``name`` (the current one included)."""

    def zscore(self, name: str, w: int, ddof: int) -> np.ndarray:
        """(x - mean) / std over the last w values of ``name``; 0 where the window is flat."""

    def window(self, name: str, w: int) -> np.ndarray:
        """(rows, w): the last w values of ``name`` for each row, oldest first (read-only; NaN
        before the first bar). For statistics the other operations do not give (extremes,
        higher moments, autocorrelation): O(w) per row, so keep w small."""

    def ema(self, key: str, x: np.ndarray, alpha: float) -> np.ndarray:
        """y = alpha * x + (1 - alpha) * y[previous bar], seeded with x at the first bar.

        ``x`` may be any element-wise expression; ``key`` names the smoother's state (unique in
        a feature set). The live engine keeps only the newest value of a smoother, so take lags
        and window statistics of inputs, never of a smoother's output.
        """


IndicatorFn = Callable[[Series], Sequence[np.ndarray]]


@dataclass(frozen=True)
class Indicator:
    names: tuple[str, ...]
    compute: IndicatorFn


def indicator(*names: str) -> Callable[[IndicatorFn], Indicator]:
    """Declare an indicator returning one array per name, in that order."""
    def wrap(fn: IndicatorFn) -> Indicator:
        return Indicator(tuple(names), fn)
    return wrap


@dataclass(frozen=True)
class FeatureSet:
    """``history`` bounds every lag (< history) and window (<= history) an indicator may use;
    rows before ``warmup`` are not served (NaN in datasets, cold in the live book)."""

    id: str
    inputs: Callable[[Bar, Bar], Mapping[str, np.ndarray]]
    input_names: tuple[str, ...]
    indicators: tuple[Indicator, ...]
    history: int
    warmup: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for ind in self.indicators for n in ind.names)

    def evaluate(self, series: Series) -> list[np.ndarray]:
        """Every feature, in ``names`` order."""
        return list(self.columns(series))

    def indicator_columns(self) -> list[np.ndarray]:
        """Each indicator's columns in ``names`` (in indicator order)."""
        out, start = [], 0
        for ind in self.indicators:
            out.append(np.arange(start, start + len(ind.names)))
            start += len(ind.names)
        return out

    def columns_of(self, which: Sequence[int]) -> np.ndarray:
        """The columns of indicators ``which``, in that order (remembered per set and list:
        a bar asks for the same ones)."""
        return _columns_of(self, tuple(which))

    def evaluate_into(self, series: Series, out: np.ndarray, which: Sequence[int]) -> None:
        """The features of indicators ``which`` (indices into ``indicators``) into their
        columns of ``out`` (rows, features); the other columns are left as they are. Each
        indicator reads only the series, so evaluating some now and the rest later (on the
        same series) gives what :meth:`evaluate` gives."""
        values = [v for i in which for v in _computed(self.indicators[i], series)]
        if values:
            out[:, self.columns_of(which)] = np.stack(values, axis=1)

    def columns(self, series: Series) -> Iterator[np.ndarray]:
        """Every feature, in ``names`` order, one indicator at a time (a caller that stores
        each array as it comes lets the indicator's temporaries be reused while in cache)."""
        for ind in self.indicators:
            values = _computed(ind, series)
            yield from values
            del values


def _computed(ind: Indicator, series: Series) -> Sequence[np.ndarray]:
    """``ind`` on ``series``: one array per name it declares, or ValueError."""
    values = ind.compute(series)
    if len(values) != len(ind.names):
        raise ValueError(f"indicator {ind.names} returned {len(values)} arrays")
    return values


@functools.lru_cache(maxsize=64)
def _columns_of(fs: FeatureSet, which: tuple[int, ...]) -> np.ndarray:
    columns = fs.indicator_columns()
    out = np.concatenate([columns[i] for i in which]) if which else np.zeros(0, dtype=np.intp)
    out.flags.writeable = False
    return out


def flat_windows(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Windows without spread (see FLAT_REL); False where std is NaN."""
    return std <= FLAT_REL * np.abs(mean)
