"""The live engine: a ring buffer of recent inputs for many symbols, one vectorised step a bar."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from . import batch
from .fs1 import FS1
from .spec import N_COLUMNS, OPEN_TIME, Bar, FeatureSet, flat_windows


class FeatureBook:
    """Incremental features for a set of symbols (see the package docstring for the API)."""

    def __init__(self, symbols: Iterable[str] = (), feature_set: FeatureSet = FS1) -> None:
        self.feature_set = feature_set
        self._h = feature_set.history
        self._back = np.arange(1 - self._h, 1)  # a history's offsets from its newest value
        self._input_index = {name: j for j, name in enumerate(feature_set.input_names)}
        self._slots: dict[str, int] = {}
        self._free: list[int] = []
        self._capacity = 0
        # Every input twice per symbol: value i at ring[j, slot, i % H] and [.., i % H + H], so
        # the last H values of a symbol are always one contiguous run.
        self._ring = np.empty((len(feature_set.input_names), 0, 2 * self._h))
        self._last = np.empty((0, N_COLUMNS))
        self._count = np.empty(0, dtype=np.int64)
        self._smoothers: dict[str, np.ndarray] = {}
        self._version = 0  # bumped when symbols come or go: invalidates the slot cache
        self._slot_cache: tuple[int, tuple[str, ...], np.ndarray] | None = None
        # a push's indicators still to compute (:meth:`finish`)
        self._pending: tuple[LiveSeries, np.ndarray, np.ndarray, list[int]] | None = None
        for symbol in symbols:
            self.add(symbol)

    # -- symbols ---------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._slots)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, symbol: str) -> None:
        """Track ``symbol`` (no bars yet); a no-op if it is tracked already."""
        self.finish()
        if symbol in self._slots:
            return
        if not self._free:
            self._grow(max(8, 2 * self._capacity))
        slot = self._free.pop()
        self._reset(slot)
        self._slots[symbol] = slot
        self._version += 1

    def remove(self, symbol: str) -> None:
        """Forget ``symbol`` and its history; a no-op if it is not tracked."""
        self.finish()
        slot = self._slots.pop(symbol, None)
        if slot is not None:
            self._free.append(slot)
            self._version += 1

    @property
    def nbytes(self) -> int:
        """Memory held for the symbols' state: bounded by the feature window per symbol."""
        return (self._ring.nbytes + self._last.nbytes + self._count.nbytes
                + sum(state.nbytes for state in self._smoothers.values()))

    def bars_seen(self, symbol: str) -> int:
        return int(self._count[self._slots[symbol]]) if symbol in self._slots else 0

    def is_warm(self, symbol: str) -> bool:
        return self.bars_seen(symbol) > self.feature_set.warmup

    def _grow(self, capacity: int) -> None:
        old = self._capacity
        ring = np.full((self._ring.shape[0], capacity, 2 * self._h), np.nan)
        ring[:, :old] = self._ring
        last = np.full((capacity, N_COLUMNS), np.nan)
        last[:old] = self._last
        count = np.zeros(capacity, dtype=np.int64)
        count[:old] = self._count
        for key, state in self._smoothers.items():
            grown = np.full(capacity, np.nan)
            grown[:old] = state
            self._smoothers[key] = grown
        self._ring, self._last, self._count, self._capacity = ring, last, count, capacity
        self._free.extend(range(capacity - 1, old - 1, -1))

    def _reset(self, slot: int) -> None:
        self._ring[:, slot] = np.nan
        self._last[slot] = np.nan
        self._count[slot] = 0
        for state in self._smoothers.values():
            state[slot] = np.nan

    # -- bars ------------------------------------------------------------------------------

    def prefill(self, symbol: str, candles: np.ndarray) -> np.ndarray:
        """Make ``symbol``'s state that of these (n, 7) candles, oldest first, as if each had
        been pushed; adds the symbol if needed. Runs the batch engine once over them and keeps
        only the last ``history`` inputs and the smoothers. Returns the newest candle's feature
        row (NaN unless warm)."""
        return self.prefill_rows(symbol, candles)[-1]

    def prefill_rows(self, symbol: str, candles: np.ndarray) -> np.ndarray:
        """:meth:`prefill`, returning every candle's feature row, (n, features) (NaN rows where
        not warm; one NaN row for no candles)."""
        bars = batch.as_ohlcv(candles)
        if bars.ndim != 2:
            raise ValueError(f"prefill {symbol}: expected (n, {N_COLUMNS}) candles, "
                             f"got shape {bars.shape}")
        if len(bars) > 1 and not np.all(np.diff(bars[:, OPEN_TIME]) > 0):
            raise ValueError(f"prefill {symbol}: open times must increase strictly")
        self.add(symbol)
        slot = self._slots[symbol]
        self._reset(slot)
        n = len(bars)
        if n == 0:
            return np.full((1, len(self.feature_set.names)), np.nan)
        out = np.empty((len(self.feature_set.names), n))
        state = batch.run_symbol(self.feature_set, bars, out)
        keep = min(n, self._h)
        rows = np.arange(n - keep, n) % self._h
        self._ring[:, slot, rows] = state.inputs[:, self._h - keep:]
        self._ring[:, slot, rows + self._h] = state.inputs[:, self._h - keep:]
        for key, value in state.carries.items():
            self._smoother(key)[slot] = value
        self._last[slot] = state.last
        self._count[slot] = n
        return out.T.copy()

    def push(self, symbols: Sequence[str], rows: np.ndarray,
             first: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Add one closed candle for each of ``symbols`` (unknown ones are added) and compute
        their features in one vectorised step.

        ``rows`` is (k, 7) ``[open_time, open, high, low, close, volume, turnover]``; each open
        time must be after that symbol's previous one. Returns ``(features, warm)``: (k,
        features) rows, NaN where not warm, and the (k,) warm mask.

        With ``first`` (indices into the feature set's indicators) only those indicators'
        columns are computed now, the others are NaN until :meth:`finish` fills them into the
        same array (the trading engine: the prod models' columns before the bar's orders, the
        rest after). Any other call on the book finishes a pending push first, so its state
        never skips a bar.
        """
        self.finish()
        bars = np.asarray(rows, dtype=np.float64)
        k = len(symbols)
        if bars.shape != (k, N_COLUMNS):
            raise ValueError(f"push: expected ({k}, {N_COLUMNS}) rows for {k} symbols, "
                             f"got shape {bars.shape}")
        key = tuple(symbols)
        cached = self._slot_cache
        if cached is not None and cached[0] == self._version and cached[1] == key:
            slots = cached[2]  # the same symbols as the last push: known, none twice
        else:
            slots = self._new_slots(symbols, key, bars)
        count = self._count[slots]
        last = self._last[slots]
        stale = (count > 0) & ~(bars[:, OPEN_TIME] > last[:, OPEN_TIME])
        if stale.any():
            i = int(np.argmax(stale))
            raise ValueError(f"push {symbols[i]}: bar open time {bars[i, OPEN_TIME]:.0f} is not "
                             f"after the previous bar's {last[i, OPEN_TIME]:.0f}")
        seen = count > 0
        split, first = first, None if seen.all() else ~seen
        prev = last if first is None else np.where(seen[:, None], last, bars)
        fs = self.feature_set
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inputs = fs.inputs(Bar(bars.T), Bar(prev.T))
            stacked = np.stack([inputs[name] for name in fs.input_names])
            newest = self._at(slots, count)
            flat = self._ring.reshape(len(fs.input_names), -1)
            flat[:, newest] = stacked
            flat[:, newest - self._h] = stacked
            series = LiveSeries(self, inputs, slots, newest, first)
            if split is None:
                features = np.stack(fs.evaluate(series), axis=1)
            else:
                features = np.full((k, len(fs.names)), np.nan)
                fs.evaluate_into(series, features, split)
        count += 1
        self._count[slots] = count
        self._last[slots] = bars
        warm = count > fs.warmup
        if not warm.all():
            features[~warm] = np.nan
        if split is not None:
            chosen = set(split)
            self._pending = (series, features, warm,
                             [i for i in range(len(fs.indicators)) if i not in chosen])
        return features, warm

    def finish(self) -> bool:
        """Compute the indicators a ``push(..., first=...)`` left, into the features array it
        returned; False when nothing was pending."""
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        series, features, warm, rest = pending
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.feature_set.evaluate_into(series, features, rest)
        if not warm.all():
            features[~warm] = np.nan
        return True

    def rehearse(self) -> int:
        """Go through a push's steps on every symbol's newest bar again, changing nothing:
        the inputs of its candle, then every indicator over the ring as it stands (smoothers
        read, not written). Returns how many symbols it went over.

        Why: between two bars minutes apart the caches go cold, and a push then pays for
        fetching its code and the book's arrays from memory (about a third of its time on a
        shared 2-core machine). The trading engine rehearses shortly before a bar is due
        (:meth:`appliance.services.trading.TradingEngine.rehearse`), so that the real push
        finds them warm. The values computed are thrown away: they are not the newest rows
        (each smoother steps once more)."""
        self.finish()
        slots = np.fromiter(self._slots.values(), dtype=np.intp, count=len(self._slots))
        slots = slots[self._count[slots] > 0]
        if not len(slots):
            return 0
        fs = self.feature_set
        last = self._last[slots]
        newest = self._at(slots, self._count[slots] - 1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            fs.inputs(Bar(last.T), Bar(last.T))
            flat = self._ring.reshape(len(fs.input_names), -1)
            inputs = {name: flat[j].take(newest) for j, name in enumerate(fs.input_names)}
            np.stack(fs.evaluate(LiveSeries(self, inputs, slots, newest, None, dry=True)),
                     axis=1)
        return len(slots)

    def _at(self, slots: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Flat ring index (in one input's row) of each slot's value number ``i`` (its second
        copy, so the ``history`` values before it are the run just below)."""
        return slots * (2 * self._h) + (i % self._h) + self._h

    def _new_slots(self, symbols: Sequence[str], key: tuple[str, ...],
                   bars: np.ndarray) -> np.ndarray:
        """The slots of a push's symbols (cached for the next push of the same symbols),
        adding unknown ones, once no known one's bar is stale (else nothing changes)."""
        k = len(symbols)
        if len(set(symbols)) != k:
            raise ValueError("push: a symbol appears twice in one push")
        known = self._slots
        slots = np.fromiter((known.get(s, -1) for s in symbols), dtype=np.intp, count=k)
        new = slots < 0
        if new.any():
            old = slots[~new]
            stale = (self._count[old] > 0) & ~(bars[~new, OPEN_TIME]
                                               > self._last[old, OPEN_TIME])
            if stale.any():
                i = int(np.flatnonzero(~new)[np.argmax(stale)])
                raise ValueError(f"push {symbols[i]}: bar open time {bars[i, OPEN_TIME]:.0f} "
                                 f"is not after the previous bar's "
                                 f"{self._last[slots[i], OPEN_TIME]:.0f}")
            for i in np.flatnonzero(new):
                self.add(symbols[i])
                slots[i] = known[symbols[i]]
        self._slot_cache = (self._version, key, slots)
        return slots

    def _smoother(self, key: str) -> np.ndarray:
        state = self._smoothers.get(key)
        if state is None:
            state = self._smoothers[key] = np.full(self._capacity, np.nan)
        return state


class LiveSeries:
    """``Series`` over the newest bar of k symbols, reading history from the book's ring."""

    def __init__(self, book: FeatureBook, inputs: Mapping[str, np.ndarray], slots: np.ndarray,
                 newest: np.ndarray, first: np.ndarray | None, dry: bool = False) -> None:
        self.book = book
        self.dry = dry  # a rehearsal (:meth:`FeatureBook.rehearse`): smoothers are not written
        self.inputs = inputs
        self.slots = slots
        self.newest = newest  # flat ring index of each symbol's newest value
        self.first = first  # symbols at their first bar (None: none)
        self.used: set[str] = set()
        self._histories: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        return self.inputs[name]

    def _flat(self, name: str) -> np.ndarray:
        book = self.book
        return book._ring[book._input_index[name]].reshape(-1)

    def _history(self, name: str) -> np.ndarray:
        """(k, history): the last values of ``name``, oldest first; one gather per input and
        push, shared by every window and lag on it (read-only)."""
        got = self._histories.get(name)
        if got is None:
            index = self._histories.get("")
            if index is None:
                index = self._histories[""] = self.newest[:, None] + self.book._back
            got = self._histories[name] = self._flat(name).take(index)
            got.flags.writeable = False
        return got

    def lag(self, name: str, k: int) -> np.ndarray:
        h = self.book._h
        if not 0 < k < h:
            raise ValueError(f"feature definition: lag {k} needs history > {k}")
        if name in self._histories:
            return self._histories[name][:, h - 1 - k]
        return self._flat(name).take(self.newest - k)

    def window(self, name: str, w: int) -> np.ndarray:
        h = self.book._h
        if not 1 <= w <= h:
            raise ValueError(f"feature definition: window {w} needs history >= {w}")
        return self._history(name)[:, h - w:]

    def std(self, name: str, w: int, ddof: int) -> np.ndarray:
        win = self.window(name, w)
        mean = win.sum(axis=1, keepdims=True)
        mean *= 1.0 / w
        dev = win - mean
        var = np.einsum("ij,ij->i", dev, dev)
        var *= 1.0 / (w - ddof)
        return np.sqrt(var, out=var)

    def zscore(self, name: str, w: int, ddof: int) -> np.ndarray:
        # Deviations from the current value, so no large mean is ever subtracted from x.
        current = self.inputs[name]
        dev = self.window(name, w) - current[:, None]
        mean_dev = dev.sum(axis=1, keepdims=True)
        mean_dev *= 1.0 / w
        dev -= mean_dev
        var = np.einsum("ij,ij->i", dev, dev)
        var *= 1.0 / (w - ddof)
        std = np.sqrt(var, out=var)
        mean_dev = mean_dev[:, 0]
        z = np.divide(mean_dev, std)
        np.negative(z, out=z)
        z[flat_windows(std, current + mean_dev)] = 0.0
        return z

    def ema(self, key: str, x: np.ndarray, alpha: float) -> np.ndarray:
        if key in self.used:
            raise ValueError(f"feature definition: smoother {key!r} used twice")
        self.used.add(key)
        state = self.book._smoothers.get(key) if self.dry else self.book._smoother(key)
        if state is None:  # a rehearsal before any bar: nothing to read, nothing to create
            state = np.full(self.book._capacity, np.nan)
        y = state.take(self.slots)
        y *= 1.0 - alpha
        y += alpha * x
        if self.first is not None:
            y = np.where(self.first, x, y)
        if not self.dry:
            state[self.slots] = y
        return y


# -- one symbol at a time (the engine's original interface) -----------------------------------

class _Pool:
    """The FeatureBook behind FeatureStates: ``latest_features`` over many states is then one
    vectorised step. Slots of collected states are given back."""

    def __init__(self) -> None:
        self.book = FeatureBook()
        # Re-entrant: a state collected while latest_features holds the lock gives its slot
        # back from the same thread (weakref finalizer).
        self.lock = threading.RLock()
        self.next_id = 0

    def new_key(self) -> str:
        with self.lock:
            self.next_id += 1
            key = f"state-{self.next_id}"
            self.book.add(key)
            return key

    def release(self, key: str) -> None:
        with self.lock:
            self.book.remove(key)


_POOL = _Pool()


class FeatureState:
    """One symbol's features, fed one closed bar at a time: a handle on one symbol of a shared
    FeatureBook. ``push`` only queues the bar; ``update`` or ``latest_features`` computes.
    Rows equal ``compute_features`` over the same bars from the same first bar."""

    def __init__(self) -> None:
        self._key = _POOL.new_key()
        self._pending: list[np.ndarray] = []
        self._row = np.full(len(FS1.names), np.nan)
        self._last_time = -np.inf
        weakref.finalize(self, _POOL.release, self._key)

    @property
    def bars_seen(self) -> int:
        return _POOL.book.bars_seen(self._key) + len(self._pending)

    @property
    def warm(self) -> bool:
        """True once the newest bar's row is defined (more than WARMUP_BARS bars seen)."""
        return self.bars_seen > FS1.warmup

    def push(self, bar: Sequence[float] | np.ndarray) -> None:
        """Queue the newest closed bar (7 values, open time strictly after the previous bar's)."""
        row = np.asarray(bar, dtype=np.float64).reshape(N_COLUMNS)
        if not row[OPEN_TIME] > self._last_time:
            raise ValueError("bars must arrive with strictly increasing open times")
        self._last_time = float(row[OPEN_TIME])
        self._pending.append(row)

    def update(self, bar: Sequence[float] | np.ndarray) -> np.ndarray | None:
        """Add the newest closed bar; its feature row, or None for the first WARMUP_BARS bars."""
        self.push(bar)
        row = latest_features([self])[0]
        return row if self.warm else None


def latest_features(states: Sequence[FeatureState]) -> np.ndarray:
    """The newest bar's row of every state, shape (len(states), len(FEATURE_NAMES)); rows of
    states that are not warm yet are NaN. Queued bars of all states go through the book
    together: one vectorised step per queued bar depth."""
    distinct = list({id(s): s for s in states}.values())
    with _POOL.lock:
        depth = 0
        while True:
            due = [s for s in distinct if len(s._pending) > depth]
            if not due:
                break
            rows, _ = _POOL.book.push([s._key for s in due],
                                      np.stack([s._pending[depth] for s in due]))
            for state, row in zip(due, rows):
                state._row = row
            depth += 1
        for state in distinct:
            state._pending.clear()
        return np.stack([s._row for s in states]) if states else \
            np.empty((0, len(FS1.names)))
