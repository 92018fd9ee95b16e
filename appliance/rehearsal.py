"""When the trading loop rehearses a bar's path to its orders.

A bar comes minutes after the last one, and in between the machine's caches forget the trading
engine's code and data; the next bar then pays for fetching them from memory on its way from
close to orders (on this project's shared 2-core machine about a third of that way's time:
``methtrader bench trading``). :meth:`appliance.services.trading.TradingEngine.rehearse` goes
over the last bar's path again without any effect; the loop runs it every ``every_s`` from the
moment the next bar closes on the market clock until that bar arrives (the feed asks for it half a
second after the close, then the venue answers), so that the bar finds the path warm. The window
is bounded (``window_s`` of wall time): a feed cut off by an outage does not keep the loop
rehearsing; and on the virtual clock there is none while the feed holds market time to catch
up (the CPU is the feed's then). Off (``trading.rehearse_ms = 0``) the loop waits as it did.

Pure timing (no clock is read here): the loop passes in the times.
"""

from __future__ import annotations

#: wall seconds the loop keeps rehearsing after a bar's close when the bar does not come
WINDOW_S = 2.0


class Rehearsals:
    """Says how long the trading loop waits for a bar before its next step, and whether that
    step is a rehearsal."""

    def __init__(self, every_s: float, window_s: float = WINDOW_S) -> None:
        if every_s < 0 or window_s < 0:
            raise ValueError(f"rehearsals: every_s and window_s must be >= 0, got {every_s}, "
                             f"{window_s}")
        self.every_s = every_s
        self.window_s = window_s
        self.close_ms: int | None = None  # the close whose bar the window waits for
        self.since = 0.0  # wall time (the loop's) the window opened

    def wait_s(self, next_close_ms: int | None, market_ms: int, now: float, idle_s: float,
               speed: float = 1.0) -> tuple[float, bool]:
        """How long to wait for a bar, and whether to rehearse if none came meanwhile.

        Inside a window (the next bar, closing at ``next_close_ms`` on the market clock, has
        closed and has not come, for at most ``window_s`` of wall time since the loop first
        saw it closed): ``every_s``, then rehearse. Before the close: until the close (market
        time runs ``speed`` times wall time), at most ``idle_s``. Else ``idle_s``."""
        if not self.every_s or next_close_ms is None:
            return idle_s, False
        if market_ms < next_close_ms:
            return min(idle_s, (next_close_ms - market_ms) / 1000 / speed), False
        if self.close_ms != next_close_ms:
            self.close_ms, self.since = next_close_ms, now
        if now - self.since < self.window_s:
            return min(self.every_s, idle_s), True
        return idle_s, False
