"""Closed bars, fanned out: the feed is the only reader of live candles from the exchange, and
every service that trades or watches bars gets them from here over a trio memory channel.

The feed hands each batch of stored 1m candles to :meth:`BarHub.add_minutes`, then calls
:meth:`BarHub.flush`. A bar of an interval is published once it has closed on the market clock
and every symbol that trades has delivered its last minute (or a grace period has passed: a
venue that never sends a minute must not hold the bar back for good). Bars are the same
aggregation as the lake's (:func:`appliance.bars.aggregate_buckets`).

A subscriber that cannot keep up (its channel is full) is cut off: its channel closes, and it
catches up from the store when it subscribes again, so nothing waits on a slow consumer and
nothing is silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trio

from appliance.bars import aggregate_buckets
from appliance.logs import service_logger
from data.intervals import MINUTE_MS, interval_ms

GRACE_MS = 2 * MINUTE_MS  # publish a bar without a symbol's last minute after this
log = service_logger("feed")


@dataclass(frozen=True)
class BarBatch:
    """Every symbol's bar of ``interval`` that closed at ``end_ms`` (open time + interval)."""

    interval: str
    end_ms: int
    bars: dict[str, np.ndarray]  # symbol -> (7,) [open_time, o, h, l, c, volume, turnover]

    @property
    def open_ms(self) -> int:
        return self.end_ms - interval_ms(self.interval)


@dataclass
class _Subscriber:
    name: str
    intervals: frozenset[str]
    send: trio.MemorySendChannel
    lost: int = 0


@dataclass
class BarHub:
    intervals: tuple[str, ...] = ("5m", "1h")
    buffer: int = 512
    _minutes: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _latest: dict[str, int] = field(default_factory=dict)
    _next_end: dict[str, int] = field(default_factory=dict)
    _subs: list[_Subscriber] = field(default_factory=list)
    published: int = 0

    def subscribe(self, name: str, intervals: tuple[str, ...]) -> trio.MemoryReceiveChannel:
        """A new channel of ``intervals`` bars for ``name`` (a previous one is closed)."""
        for old in [s for s in self._subs if s.name == name]:
            old.send.close()
            self._subs.remove(old)
        send, receive = trio.open_memory_channel(self.buffer)
        self._subs.append(_Subscriber(name, frozenset(intervals), send))
        return receive

    def add_minutes(self, symbol: str, rows: np.ndarray) -> None:
        """Stored 1m candles of ``symbol`` (n, 7), oldest first, newer than any before."""
        if not len(rows):
            return
        self._minutes.setdefault(symbol, []).append(np.asarray(rows, dtype=np.float64))
        self._latest[symbol] = int(rows[-1, 0])
        for interval in self.intervals:
            if interval not in self._next_end:  # start with the first bar we see whole
                step = interval_ms(interval)
                first = int(rows[0, 0])
                self._next_end[interval] = first - first % step + (step if first % step
                                                                   else 0) + step

    def flush(self, closed_end: int, symbols: list[str]) -> list[BarBatch]:
        """Publish every bar that is complete by ``closed_end`` (the open time of the minute in
        progress), in time order (at one moment the 5m bar before the 1h bar); ``symbols`` are
        the ones whose minutes a bar waits for."""
        out = []
        minutes = {s: np.concatenate(chunks) for s, chunks in self._minutes.items() if chunks}
        for interval in self.intervals:
            step = interval_ms(interval)
            while (end := self._next_end.get(interval)) is not None and end <= closed_end:
                last_minute = end - MINUTE_MS
                waiting = [s for s in symbols if self._latest.get(s, -1) < last_minute
                           and s in self._latest]
                if waiting and closed_end - end < GRACE_MS:
                    break
                bars = {}
                for symbol, rows in minutes.items():
                    lo, hi = np.searchsorted(rows[:, 0], [end - step, end])
                    if hi > lo:
                        bars[symbol] = aggregate_buckets(rows[lo:hi], step)[0]
                self._next_end[interval] = end + step
                if bars:
                    out.append(BarBatch(interval, end, bars))
        out.sort(key=lambda b: (b.end_ms, interval_ms(b.interval)))
        for batch in out:
            self._publish(batch)
        oldest = min((e - interval_ms(i) for i, e in self._next_end.items()), default=None)
        self._minutes = {s: [rows[rows[:, 0] >= oldest]] if oldest is not None else [rows]
                         for s, rows in minutes.items()}
        return out

    def _publish(self, batch: BarBatch) -> None:
        self.published += 1
        for sub in list(self._subs):
            if batch.interval not in sub.intervals:
                continue
            try:
                sub.send.send_nowait(batch)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                sub.lost += 1
                sub.send.close()
                self._subs.remove(sub)
                log.warning("bar subscriber cut off; it catches up from the store",
                            subscriber=sub.name, reason=type(exc).__name__)
