"""Is this table OHLCV candles, and on which interval? Pure functions over numpy arrays.

Rows are ``(n, 6)`` or ``(n, 7)`` float64: open_time_ms, open, high, low, close, volume[,
turnover]. :func:`check_candles` raises :class:`InvalidCandles` whose reason says what is wrong in
words a user can act on (how many rows, the first bad time, and a guess at what the file really
is), or returns the interval with the rows ready to use.

Intervals are Bybit's fixed ones (``1m`` … ``1w``) plus ``1M``, a calendar month. Monthly files
labelled by the month's last day (pandas' ``resample("M")``, e.g. backtesting.py's BTCUSD.csv)
are moved to the first day of that month, so every row's time is its candle's open time, as
everywhere else in methtrader: a month bar labelled 2012-01-31 covers January and closes on
2012-02-01.
"""

from __future__ import annotations

import numpy as np

from data.intervals import BY_MS as _BY_MS
from data.intervals import DAY_MS, INTERVAL_MS, MINUTE_MS

MONTH = "1M"
# open times outside 2009-01-01 .. 2100-01-01 are not milliseconds since the epoch
_EARLIEST_MS, _LATEST_MS = 1_230_768_000_000, 4_102_444_800_000
_COLUMNS = ("open time", "open", "high", "low", "close", "volume", "turnover")


class InvalidCandles(ValueError):
    """The rows are not valid OHLCV candles; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fmt_ms(ms: float) -> str:
    """A UTC time for messages: ``2018-01-10 04:55`` (seconds and ms only when present)."""
    t = np.datetime64(int(ms), "ms")
    text = str(t).replace("T", " ")
    for tail in (":00.000", ".000"):
        if text.endswith(tail):
            return text[: -len(tail)]
    return text


def _fmt_step(ms: int) -> str:
    days, rest = divmod(int(ms), DAY_MS)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, MINUTE_MS)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "",
             f"{minutes}m" if minutes else "", f"{rest / 1000:g}s" if rest else ""]
    return " ".join(p for p in parts if p) or "0s"


def close_times(open_ms: np.ndarray, interval: str) -> np.ndarray:
    """When each candle closes (int64 ms): open + interval, or the next month's first day."""
    open_ms = np.asarray(open_ms, dtype=np.int64)
    if interval == MONTH:
        months = open_ms.astype("datetime64[ms]").astype("datetime64[M]")
        return (months + 1).astype("datetime64[ms]").astype(np.int64)
    return open_ms + INTERVAL_MS[interval]


def check_candles(rows: np.ndarray, interval_hint: str | None = None) -> tuple[str, np.ndarray]:
    """Validate candle rows; return ``(interval, rows)`` (month-end labels moved to opens).

    ``interval_hint`` is what the file name says (``-5m``, Lean's ``minute``); the candles
    must agree with it, and it decides the interval of a single-row file.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] not in (6, 7):
        raise InvalidCandles("not OHLCV candles: expected rows of open time, open, high, low, "
                             "close, volume")
    if len(rows) == 0:
        raise InvalidCandles("no candles in the file")
    _check_values(rows)
    times = rows[:, 0]
    if np.any(times != np.floor(times)) or times.min() < _EARLIEST_MS \
            or times.max() >= _LATEST_MS:
        bad = times[(times != np.floor(times)) | (times < _EARLIEST_MS) | (times >= _LATEST_MS)]
        raise InvalidCandles(f"open times are not milliseconds since the epoch between 2009 "
                             f"and 2100 (e.g. {bad[0]:g})")
    _check_order(times)
    interval, times = _interval(times.astype(np.int64), interval_hint)
    if not np.array_equal(times, rows[:, 0]):
        rows = rows.copy()
        rows[:, 0] = times
    return interval, rows


def _check_values(rows: np.ndarray) -> None:
    for col in range(1, rows.shape[1]):
        missing = ~np.isfinite(rows[:, col])
        if missing.any():
            name = _COLUMNS[col]
            hint = (" (a mark-price or index file? replay needs traded volume)"
                    if name == "volume" and missing.all() else "")
            raise InvalidCandles(f"not OHLCV candles: {name} is null or not a finite number "
                                 f"in {int(missing.sum())} rows{hint}")
    o, h, lo, c = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    if bad.any():
        zero_hlc = (h == 0) & (lo == 0) & (c == 0)
        hint = " (a funding-rate file?)" if zero_hlc[bad].mean() > 0.5 else ""
        raise InvalidCandles(f"not OHLCV candles: high below open or close, or low above them, "
                             f"in {int(bad.sum())} rows{hint}")
    nonpos = (rows[:, 1:5] <= 0).any(axis=1)
    if nonpos.any():
        raise InvalidCandles(f"not OHLCV candles: zero or negative prices in "
                             f"{int(nonpos.sum())} rows")
    negvol = rows[:, 5] < 0
    if rows.shape[1] == 7:
        negvol |= rows[:, 6] < 0
    if negvol.any():
        raise InvalidCandles(f"negative volume in {int(negvol.sum())} rows")


def _check_order(times: np.ndarray) -> None:
    steps = np.diff(times)
    dups = np.flatnonzero(steps == 0)
    if len(dups):
        raise InvalidCandles(f"{len(dups)} duplicate open times (first {fmt_ms(times[dups[0]])})")
    back = np.flatnonzero(steps < 0)
    if len(back):
        raise InvalidCandles(f"open times go backwards in {len(back)} places (first after "
                             f"{fmt_ms(times[back[0]])}): rows must be oldest first")


def _interval(times: np.ndarray, hint: str | None) -> tuple[str, np.ndarray]:
    if hint is not None and hint != MONTH and hint not in INTERVAL_MS:
        raise InvalidCandles(f"unknown interval {hint!r} in the file name")
    if len(times) == 1:
        if hint is None:
            raise InvalidCandles("a single candle: its interval cannot be told (put it in the "
                                 "file name, e.g. BTCUSDT-1h.csv)")
        return hint, _month_opens(times) if hint == MONTH else times
    steps = np.diff(times)
    if hint == MONTH or (hint is None and steps.min() >= 28 * DAY_MS):
        return MONTH, _month_opens(times)
    if hint is None:
        step = int(steps.min())
        if step not in _BY_MS:
            raise InvalidCandles(f"the smallest step between open times is {_fmt_step(step)}, "
                                 "not a candle interval")
        interval = _BY_MS[step]
    else:
        interval, step = hint, INTERVAL_MS[hint]
        if steps.min() < step:
            raise InvalidCandles(f"the file name says {hint} but candles are "
                                 f"{_fmt_step(int(steps.min()))} apart")
    off = np.flatnonzero(steps % step)
    if len(off):
        raise InvalidCandles(f"open times are off the {interval} grid in {len(off)} places "
                             f"(first {fmt_ms(times[off[0] + 1])})")
    if step <= DAY_MS:
        unaligned = np.flatnonzero(times % step)
        if len(unaligned):
            raise InvalidCandles(f"open times are not on whole {interval} boundaries in "
                                 f"{len(unaligned)} rows (first {fmt_ms(times[unaligned[0]])})")
    return interval, times


def _month_opens(times: np.ndarray) -> np.ndarray:
    """Monthly candles as month-start open times; labels must be a month's first or last day."""
    stamps = times.astype("datetime64[ms]")
    months = stamps.astype("datetime64[M]")
    starts = months.astype("datetime64[ms]")
    last_days = (months + 1).astype("datetime64[ms]") - np.timedelta64(DAY_MS, "ms")
    if not (np.all(stamps == starts) or np.all(stamps == last_days)):
        bad = np.flatnonzero((stamps != starts) & (stamps != last_days))
        first = bad[0] if len(bad) else 0
        raise InvalidCandles(f"monthly candles must all be labelled by their month's first day "
                             f"or all by its last day, at 00:00 (found {fmt_ms(times[first])})")
    if np.any(np.diff(months.astype(np.int64)) < 1):
        raise InvalidCandles("two monthly candles fall in the same month")
    return starts.astype(np.int64)
