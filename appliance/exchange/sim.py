"""The ``sim`` exchange: the synthetic market on the injected clock, with paper fills.

Market data is computed, not fetched: a kline request for minutes that have not closed on the
clock yet returns nothing, so no service can see the future. The paper venue charges the sim's
costs: fills cross its half spread
(:meth:`~appliance.exchange.simmarket.SimMarket.half_spread`, quoted by the tickers as bid/ask)
and open positions pay its funding every 8 hours at the last price of the funding time
(:mod:`appliance.exchange.paper`).
"""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Sequence

import trio

from appliance.clock import Clock, now_ms
from appliance.config import SimConfig
from appliance.domain import Balance, Candle, Fill, Instrument, OrderIntent, Position, Ticker
from appliance.exchange.base import BATCH_FILLS, PAPER, VOLUME_BAR, ExchangeError, fill_each
from appliance.exchange.paper import PaperBroker
from appliance.exchange.simmarket import MINUTE_MS, SimMarket
from appliance.exchange.simshock import parse_shock
from data.lake import write_bytes_atomic


def parse_delistings(text: str) -> dict[str, int]:
    """``sim.delist`` ("ETHUSDT@2026-12-01 12:00,...") as symbol → settlement time (ms)."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        symbol, when = item.split("@", 1)
        fmt = "%Y-%m-%d %H:%M" if " " in when else "%Y-%m-%d"
        out[symbol] = int(calendar.timegm(time.strptime(when, fmt))) * 1000
    return out


def restore_account(broker: PaperBroker, path: Path) -> None:
    """Load the saved paper account; :class:`ExchangeError` naming the file when it is not one
    (bad JSON, missing fields, a non-finite amount)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(64 << 20)
        data = json.loads(raw)
        broker.restore(data)
        amounts = [broker.wallet] + [v for p in broker.positions.values()
                                     for v in (p.qty, p.avg_price, p.realized_pnl)]
        if not all(a.is_finite() for a in amounts):
            raise ValueError("an amount is not a finite number")
    except OSError as exc:
        raise ExchangeError(f"{path} cannot be read ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
        raise ExchangeError(f"{path} is damaged ({type(exc).__name__}: {exc}); move it aside "
                            "to start a fresh paper account (positions are then reconciled "
                            "against it)") from None


class SimExchange:
    name = "sim"
    capabilities = frozenset({PAPER, VOLUME_BAR, BATCH_FILLS})

    def __init__(self, clock: Clock, cfg: SimConfig, market: SimMarket | None = None, *,
                 inline: bool = False, account_file: Path | None = None) -> None:
        """``inline=True`` computes on the event loop (tests on trio's autojump clock).

        ``account_file`` keeps the paper account across restarts, as a venue keeps yours, so
        the appliance's books can be reconciled against it after a crash.
        """
        self.clock = clock
        self.inline = inline
        self.market = market or SimMarket(cfg.seed, parse_delistings(cfg.delist),
                                          cfg.trend_share, cfg.pairs,
                                          parse_shock(cfg.shock_at, cfg.shock_symbols,
                                                      cfg.shock_vol))
        self.broker = PaperBroker(
            self._last_price, taker_fee=cfg.taker_fee, slippage_bps=cfg.slippage_bps,
            starting_balance=cfg.starting_balance,
            tick_of=self.market.tick, step_of=self.market.qty_step,
            price_at=self.market.last_price, half_spread_of=self.market.half_spread,
            funding_of=self.market.funding_rates)
        self.account_file = account_file
        if account_file is not None and account_file.exists():
            restore_account(self.broker, account_file)
        # The market is CPU work (numpy); one thread at a time keeps its caches simple. The
        # paper account has its own: an order never waits behind the feed's candles.
        self._limiter = trio.CapacityLimiter(1)
        self._account_limiter = trio.CapacityLimiter(1)

    def _closed_before(self) -> int:
        t = now_ms(self.clock)
        return t - t % MINUTE_MS

    def _last_price(self, symbol: str) -> float | None:
        return self.market.last_price(symbol, now_ms(self.clock))

    async def _run(self, fn, *args, account: bool = False):
        """``fn`` off the event loop, one call at a time per limiter: the market's, or with
        ``account`` the paper account's (orders, positions, balance)."""
        if self.inline:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        limiter = self._account_limiter if account else self._limiter
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)

    async def server_time_ms(self) -> int:
        return now_ms(self.clock)

    async def instruments(self) -> list[Instrument]:
        return self.market.instruments(now_ms(self.clock))

    async def tickers(self) -> list[Ticker]:
        return await self._run(self.market.tickers, now_ms(self.clock))

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        if interval != "1m":
            raise ExchangeError(f"sim serves 1m candles; {interval} is derived by resampling")
        end = min(end_ms, self._closed_before())
        return await self._run(self.market.candle_records, symbol, start_ms, end)

    async def klines_array(self, symbol: str, start_ms: int, end_ms: int):
        """The same candles as a numpy array (n, 7)."""
        end = min(end_ms, self._closed_before())
        return await self._run(self.market.candles, symbol, start_ms, end)

    async def place_order(self, intent: OrderIntent) -> Fill:
        return await self._run(self._fill_and_save, intent, now_ms(self.clock), account=True)

    async def place_orders(self, intents: Sequence[OrderIntent]) -> list[Fill | ExchangeError]:
        """The batch filled in one step and the account saved once (not once an order: the
        file holds the last ``MAX_REMEMBERED`` orders, and a bar sends dozens). A crash before
        the save loses the batch's fills here and in the books alike (neither recorded them),
        and the order journal then settles each order as never executed."""
        return await self._run(self._fill_all_and_save, list(intents), now_ms(self.clock),
                               account=True)

    def _fill_and_save(self, intent: OrderIntent, ts: int) -> Fill:
        fill = self.broker.fill(intent, ts)
        self._save()
        return fill

    def _fill_all_and_save(self, intents: list[OrderIntent], ts: int
                           ) -> list[Fill | ExchangeError]:
        out = fill_each(lambda intent: self.broker.fill(intent, ts), intents)
        if any(isinstance(o, Fill) for o in out):
            self._save()
        return out

    def _save(self) -> None:
        if self.account_file is not None:
            write_bytes_atomic(self.account_file, self.broker.to_json().encode())

    def _settle(self, now: int) -> None:
        """Funding due up to ``now``; the account is saved when a payment was made (a time
        crossed without one needs no saving: it is settled again, to nothing, after a
        restart)."""
        if self.broker.settle_funding(now):
            self._save()

    def _positions(self, now: int) -> list[Position]:
        self._settle(now)
        return [p for p in self.broker.positions.values() if p.qty]

    def _balance(self, now: int) -> Balance:
        self._settle(now)
        return self.broker.balance()

    async def fee_rates(self) -> dict[str, float]:
        """None from the venue: the configured taker fee applies to every symbol."""
        return {}

    async def funding_rates(self, symbol: str, start_ms: int, end_ms: int
                            ) -> list[tuple[int, float]]:
        end = min(end_ms, now_ms(self.clock))
        return await self._run(self.market.funding_rates, symbol, start_ms, end)

    async def order_fill(self, symbol: str, order_link_id: str) -> Fill | None:
        await trio.lowlevel.checkpoint()
        return self.broker.fill_of(order_link_id)

    def serves(self, symbol: str, interval: str) -> bool:
        return interval == "1m"

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def cancel_order(self, symbol: str, order_id: str) -> None:
        raise ExchangeError("paper market orders fill at once; there is nothing to cancel")

    async def positions(self) -> list[Position]:
        return await self._run(self._positions, now_ms(self.clock), account=True)

    async def balance(self) -> Balance:
        return await self._run(self._balance, now_ms(self.clock), account=True)

    def rate_limit_usage(self) -> float:
        return 0.0
