"""The bar book: one interval's closed bars per symbol and their incremental features.

The trading engine keeps one per trading interval (5m, 1h). Bars arrive from the feed through
the bar hub; at start, and whenever a bar is missing (the engine was restarted, or cut off for
being slow), the book fills itself from stored candles — DuckDB's recent minutes, and the lake's
day files for older history — never from the exchange. Features come from the same
``models.features`` code as training: a :class:`~models.features.FeatureBook` per bar book, so
the bars of every symbol that closed together cost one vectorised step (``push_many``), and a
symbol's history is filled by the batch engine in one call (``extend``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from appliance.bars import bars_from_minutes
from appliance.store import Store
from data.intervals import interval_ms
from data.lake import Lake
from models.features import FS2, WARMUP_BARS, FeatureBook

VOL = FS2.names.index("vol_12")
HISTORY_BARS = 288  # closes kept per symbol (a day of 5m bars): allocation's volatility
SLOT_LOOKUPS_KEPT = 64  # lists of symbols whose slots are remembered
# each column of the catalogue's row: the index of the indicator that computes it
_INDICATOR_OF = np.concatenate([np.full(len(c), i) for i, c in enumerate(
    FS2.indicator_columns())]).astype(np.intp)


@functools.lru_cache(maxsize=64)
def _computed(first: tuple[int, ...]) -> np.ndarray:
    """Which columns of a row indicators ``first`` compute (a mask)."""
    done = np.isin(_INDICATOR_OF, first)
    done.flags.writeable = False
    return done


class BarBook:
    """Per symbol slot, numpy rings (no Python object per bar): the feature rows kept
    (``rows_kept``, float64 as the feature engine computes them), the last ``HISTORY_BARS``
    closes and the newest bar's open time, so that a bar of every symbol is a few array writes
    and a model's windows over every symbol one gather."""

    def __init__(self, interval: str, rows_kept: int = 64) -> None:
        self.interval = interval
        self.step = interval_ms(interval)
        self.rows_kept = rows_kept
        # the catalogue (fs1's columns first): each model reads its own columns of a row
        self.features = FeatureBook(feature_set=FS2)
        self._slot: dict[str, int] = {}
        self._slots_of: dict[tuple[str, ...], np.ndarray] = {}  # lookups (slots never move)
        self._ring = np.zeros((0, rows_kept, len(FS2.names)))  # slots × rows × features
        self._count = np.zeros(0, dtype=np.int64)  # rows ever kept per slot
        self._vol = np.zeros(0)  # the newest row's volatility per slot
        self._closes = np.zeros((0, HISTORY_BARS))  # slots × closes (a ring)
        self._logs = np.zeros((0, HISTORY_BARS))  # ... and their logs (returns, allocation)
        self._n_closes = np.zeros(0, dtype=np.int64)  # closes ever kept per slot
        self._last_open = np.zeros(0, dtype=np.int64)  # the newest bar's open time (-1: none)
        # the newest rows whose other indicators are still to come (:meth:`finish`)
        self._pending: tuple[np.ndarray, ...] | None = None

    @property
    def warmup_bars(self) -> int:
        return WARMUP_BARS + self.rows_kept

    def last_open(self, symbol: str) -> int | None:
        """The open time of ``symbol``'s newest bar, or None before its first."""
        slot = self._slot.get(symbol)
        if slot is None or self._last_open[slot] < 0:
            return None
        return int(self._last_open[slot])

    def push(self, symbol: str, bar: np.ndarray) -> bool:
        """Add one closed bar (an older or repeated one is ignored); True when it was new."""
        return bool(self.push_many({symbol: bar}))

    def indicators_of(self, columns: np.ndarray) -> tuple[int, ...]:
        """The catalogue's indicators (indices) that give ``columns`` of a row, and the one
        that gives the volatility sizing reads."""
        return tuple(sorted({int(i) for i in _INDICATOR_OF[np.asarray(columns, dtype=np.intp)]}
                            | {int(_INDICATOR_OF[VOL])}))

    def push_many(self, bars: Mapping[str, np.ndarray],
                  first: tuple[int, ...] | None = None) -> list[str]:
        """Add one closed bar per symbol in one vectorised feature step (older or repeated
        bars are ignored); returns the symbols whose bar was new, sorted.

        With ``first`` (:meth:`indicators_of`) only those indicators' columns of the new rows
        are computed now (the prod models' windows read them; the row's other columns are NaN
        meanwhile), the rest by :meth:`finish`, which every other call on the book runs
        first."""
        self.finish()
        symbols = sorted(bars)
        if not symbols:
            return []
        rows = np.array([bars[s] for s in symbols], dtype=np.float64)
        slots = self.slots(symbols)
        fresh = rows[:, 0] > self._last_open[slots]
        if not fresh.all():
            if not fresh.any():
                return []
            symbols = [s for s, ok in zip(symbols, fresh) if ok]
            rows, slots = rows[fresh], slots[fresh]
        features, warm = self.features.push(symbols, rows, first)
        self._last_open[slots] = rows[:, 0]
        at = self._n_closes[slots] % HISTORY_BARS
        self._closes[slots, at] = rows[:, 4]
        self._logs[slots, at] = np.log(rows[:, 4])
        self._n_closes[slots] += 1
        if warm.all():
            at = self._keep_rows(slots, features)
        elif warm.any():
            slots = slots[warm]
            at = self._keep_rows(slots, features[warm])
        else:
            return symbols
        if first is not None:
            self._pending = (slots, at, features, warm, _computed(first))
        return symbols

    def finish(self) -> None:
        """The rest of the rows a ``push_many(..., first=...)`` left (a no-op otherwise)."""
        self.features.finish()  # (pending there alone when no new row was warm)
        if self._pending is not None:
            slots, at, features, warm, _ = self._pending
            self._pending = None
            self._ring[slots, at] = features if warm.all() else features[warm]

    def rehearse(self) -> int:
        """The feature step of every symbol's newest bar again, changing nothing
        (:meth:`models.features.FeatureBook.rehearse`); returns the symbols gone over."""
        self.finish()
        return self.features.rehearse()

    def _keep_rows(self, slots: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Keep a row per slot; returns where in each slot's ring it went."""
        at = self._count[slots] % self.rows_kept
        self._ring[slots, at] = rows
        self._vol[slots] = rows[:, VOL]
        self._count[slots] += 1
        return at

    def extend(self, symbol: str, bars: np.ndarray) -> int:
        """Add a run of ``symbol``'s closed bars, oldest first (those not newer than the last
        one held are ignored); returns how many were new. A symbol the book has no bars of is
        filled by the batch engine in one call; a gap in a known one bar by bar."""
        self.finish()
        bars = np.asarray(bars, dtype=np.float64).reshape(-1, 7)
        last = self.last_open(symbol)
        if last is not None:
            bars = bars[bars[:, 0] > last]
        if not len(bars):
            return 0
        if last is not None:
            for bar in bars:
                self.push_many({symbol: bar})
            return len(bars)
        rows = self.features.prefill_rows(symbol, bars)
        slot = self.slots([symbol])
        n = len(bars)
        self._last_open[slot] = bars[-1, 0]
        keep = min(n, HISTORY_BARS)
        at = np.arange(n - keep, n) % HISTORY_BARS
        self._closes[slot, at] = bars[n - keep:, 4]
        self._logs[slot, at] = np.log(bars[n - keep:, 4])
        self._n_closes[slot] = n
        warm = rows[self.features.feature_set.warmup:]  # a row is served from this bar on
        if len(warm):
            keep = min(len(warm), self.rows_kept)
            self._ring[slot, np.arange(len(warm) - keep, len(warm)) % self.rows_kept] = \
                warm[len(warm) - keep:]
            self._vol[slot] = warm[-1, VOL]
            self._count[slot] = len(warm)
        return n

    def slots(self, symbols: list[str]) -> np.ndarray:
        """The rings' slot of each symbol (a new symbol gets one). Answers are kept (a slot
        never moves): a bar asks for the same lists of symbols as the last bar, most bars."""
        key = tuple(symbols)
        found = self._slots_of.get(key)
        if found is not None:
            return found
        slot = self._slot
        for s in symbols:
            if s not in slot:
                slot[s] = len(slot)
        if len(slot) > len(self._count):
            self._grow(max(8, len(self._count) // 2, len(slot) - len(self._count)))
        found = np.fromiter((slot[s] for s in symbols), dtype=np.intp, count=len(symbols))
        found.flags.writeable = False
        if len(self._slots_of) >= SLOT_LOOKUPS_KEPT:
            self._slots_of.clear()
        self._slots_of[key] = found
        return found

    def _grow(self, more: int) -> None:
        def grown(a: np.ndarray, fill: float = 0) -> np.ndarray:
            return np.concatenate([a, np.full((more, *a.shape[1:]), fill, dtype=a.dtype)])

        self._ring, self._closes, self._logs = grown(self._ring), grown(self._closes), grown(
            self._logs)
        self._count, self._n_closes = grown(self._count), grown(self._n_closes)
        self._vol, self._last_open = grown(self._vol), grown(self._last_open, -1)

    def missing_from(self, symbol: str, end_ms: int) -> int | None:
        """The open time from which bars before ``end_ms`` are missing, or None."""
        last = self.last_open(symbol)
        want_last = end_ms - 2 * self.step  # the bar before the one that closes at end_ms
        if last is not None and last >= want_last:
            return None
        start = end_ms - (self.warmup_bars + 1) * self.step
        return start if last is None else max(start, last + self.step)

    def lacking(self, symbols: list[str], end_ms: int) -> list[str]:
        """Those of ``symbols`` for which :meth:`missing_from` finds bars missing before
        ``end_ms`` (one comparison for all of them: most bars, none)."""
        slots = self.slots(symbols)
        behind = np.flatnonzero(self._last_open[slots] < end_ms - 2 * self.step)
        return [symbols[i] for i in behind.tolist()]

    def _slot_with_rows(self, symbol: str) -> int | None:
        slot = self._slot.get(symbol)
        return slot if slot is not None and self._count[slot] > 0 else None

    def warm(self, symbol: str) -> bool:
        return self._slot_with_rows(symbol) is not None

    def warm_of(self, symbols: list[str]) -> set[str]:
        """Those of ``symbols`` that :meth:`warm` says are warm, in one comparison."""
        if not symbols:
            return set()
        held = self._count[self.slots(symbols)] > 0
        return set(symbols) if held.all() else {s for s, ok in zip(symbols, held) if ok}

    def rows_count(self, symbol: str) -> int:
        """How many feature rows the book holds for ``symbol`` (at most ``rows_kept``)."""
        slot = self._slot_with_rows(symbol)
        return 0 if slot is None else int(min(self._count[slot], self.rows_kept))

    def kept_rows(self, symbol: str) -> np.ndarray | None:
        """The feature rows held for ``symbol``, oldest first (float64), or None when none."""
        slot = self._slot_with_rows(symbol)
        if slot is None:
            return None
        self.finish()
        count = int(self._count[slot])
        k = min(count, self.rows_kept)
        return self._ring[slot, np.arange(count - k, count) % self.rows_kept]

    def window(self, symbol: str, lookback: int, columns: np.ndarray | None = None
               ) -> np.ndarray:
        """The last ``lookback`` feature rows as float32 (the first repeated when fewer
        exist), of ``columns`` only when given (:func:`models.features.serving_columns`)."""
        if not self.warm(symbol):
            raise KeyError(symbol)
        return self.windows([symbol], lookback, columns)[0]

    def windows(self, symbols: list[str], lookback: int, columns: np.ndarray | None = None
                ) -> np.ndarray:
        """:meth:`window` of every symbol at once, (symbols, lookback, columns), float32 as
        the models take it: one gather from the ring. Each symbol must be :meth:`warm`.
        Columns a split push has not computed yet are computed first (:meth:`finish`)."""
        if self._pending is not None and (columns is None
                                          or not self._pending[4][np.asarray(columns)].all()):
            self.finish()
        slots = self.slots(symbols)
        count = self._count[slots]
        k = self.rows_kept
        idx = count[:, None] - lookback + np.arange(lookback)
        idx = np.maximum(idx, np.maximum(count - k, 0)[:, None]) % k
        if columns is None:
            out = self._ring[slots[:, None], idx]
        else:
            out = self._ring[slots[:, None, None], idx[:, :, None],
                             np.asarray(columns)[None, None]]
        return out.astype(np.float32)

    def vol(self, symbol: str) -> float:
        slot = self._slot_with_rows(symbol)
        if slot is None:
            raise KeyError(symbol)
        return float(self._vol[slot])

    def vols(self, symbols: list[str]) -> np.ndarray:
        """:meth:`vol` of every symbol at once (float64, as the rows hold it)."""
        return self._vol[self.slots(symbols)]

    def close(self, symbol: str) -> float:
        slot = self._slot.get(symbol)
        if slot is None or not self._n_closes[slot]:
            raise KeyError(symbol)
        return float(self._closes[slot, (self._n_closes[slot] - 1) % HISTORY_BARS])

    def closes_of(self, symbols: list[str]) -> np.ndarray:
        """The newest close of every symbol at once (each must have a bar)."""
        slots = self.slots(symbols)
        return self._closes[slots, (self._n_closes[slots] - 1) % HISTORY_BARS]

    def close_at(self, symbol: str, t_ms: int) -> float | None:
        """The close of the bar that closed at ``t_ms``, if the book still holds it."""
        last = self.last_open(symbol)
        if last is None or (t_ms - last - self.step) % self.step:
            return None
        back = (last + self.step - t_ms) // self.step
        slot = self._slot[symbol]
        n = int(self._n_closes[slot])
        if not 0 <= back < min(n, HISTORY_BARS):
            return None
        return float(self._closes[slot, (n - 1 - back) % HISTORY_BARS])

    def aligned_returns(self, symbols: list[str]) -> np.ndarray:
        """Log returns of ``symbols`` over the span all of them cover, aligned from the newest
        bar: (symbols with two closes or more, returns), one gather (the allocation's input:
        :func:`appliance.allocation.group_volatility` takes the rows)."""
        known = [s for s in symbols if s in self._slot]
        slots = self.slots(known) if known else np.zeros(0, dtype=np.intp)
        n = self._n_closes[slots]
        slots, n = slots[n >= 2], n[n >= 2]
        if not len(slots):
            return np.zeros((0, 0))
        m = int(min(n.min(), HISTORY_BARS))
        idx = (n[:, None] - m + np.arange(m)) % HISTORY_BARS
        return np.diff(self._logs[slots[:, None], idx], axis=1)

    def returns(self, symbol: str) -> np.ndarray:
        """Log returns of the closes held for ``symbol`` (up to ``HISTORY_BARS``), oldest
        first."""
        slot = self._slot.get(symbol)
        n = 0 if slot is None else int(self._n_closes[slot])
        k = min(n, HISTORY_BARS)
        if k < 2:
            return np.zeros(0)
        return np.diff(self._logs[slot, np.arange(n - k, n) % HISTORY_BARS])


def stored_bars(store: Store, lake: Lake, symbol: str, interval: str, start_ms: int,
                end_ms: int) -> np.ndarray:
    """Closed bars of ``interval`` with open time in [start_ms, end_ms - step], from stored 1m
    candles: DuckDB's recent minutes, the lake's day files before them (runs in the store's
    thread)."""
    rows = np.array(store.sql(
        "SELECT open_time, open, high, low, close, volume, turnover FROM candles "
        "WHERE symbol = ? AND interval = '1m' AND open_time >= ? AND open_time < ? "
        "ORDER BY open_time", [symbol, start_ms, end_ms]), dtype=np.float64).reshape(-1, 7)
    first = int(rows[0, 0]) if len(rows) else end_ms
    if first > start_ms:
        older = lake.read_minutes(symbol, start_ms, first)
        if len(older):
            rows = np.vstack([older, rows])
    return bars_from_minutes(rows, interval_ms(interval), end_ms)
