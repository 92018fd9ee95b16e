"""The ``replay`` exchange: real candle files (``data.loaders``) played on the market clock.

Market time *is* the files' own timeline: the appliance starts its virtual clock at
:func:`replay_start_ms` (the folder's earliest candle, or a configured start) and every answer
depends only on ``clock.now()``. A candle is visible once it has closed on the clock
(``open_time + interval <= now``), so no service can see the future; a resampled candle is
visible once its whole bucket has closed.

Instruments: every loaded symbol, ``PreLaunch`` before its first candle, ``Trading`` while its
data lasts and ``Closed`` after its last candle has closed. A symbol found in several markets
(Lean's BTCUSDT on Bybit spot, Bybit perpetual and Binance spot) is listed once per market as
``SYMBOL.market`` (``BTCUSDT.bybit-perp``); a symbol from one market keeps its plain name. Its
files' intervals are all served (XRPETH from a 1m and a 5m file serves both), and any fixed
interval up to 1d that a native interval divides is resampled from the finest such one.

Tickers give the last visible close and the turnover of the candles that closed in the last 24
hours of the series that closed most recently. The volume bar (24h turnover > $10M) is not
applied in replay (no ``VOLUME_BAR`` capability): the files quote in USDT, USD, BUSD, BTC or
ETH, and inverse contracts count volume in USD contracts, so their turnovers do not compare.

Orders fill on the paper engine at the last visible close, with the taker fee (Bybit's 0.055%),
slippage and the symbol's half spread, rounded to a tick size read from the prices; lot sizes
are powers of ten worth about ten quote units at the first price. Once a symbol's data has
ended only reducing orders are accepted.

Costs: the half spread of a symbol is Roll's estimate (:func:`models.costs.roll_half_spread`)
from its finest series, and the tickers quote bid/ask that far around the last close. Funding
files in the folder (:func:`data.loaders.load_funding_folder`) are matched to the candles of
their symbol and market; open positions pay their rates at each funding time, at the last close
visible then. A symbol without a funding file pays none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import trio

from appliance.bars import aggregate_buckets
from appliance.clock import Clock, now_ms
from appliance.domain import Balance, Candle, Fill, Instrument, OrderIntent, Position, Ticker
from appliance.exchange.base import (BATCH_FILLS, PAPER, ExchangeError, fill_each,
                                     quote_around)
from appliance.exchange.paper import PaperBroker
from data.candle_checks import DAY_MS, INTERVAL_MS, fmt_ms
from data.loaders import (CandleSeries, FundingSeries, is_funding_file, load_folder,
                          load_funding_folder)
from models.costs import roll_half_spread
from models.funding import FUNDING_INTERVALS_MS, FUNDING_PERIOD_MS

NO_FUNDING = np.zeros((0, 2))


@dataclass(frozen=True, eq=False)
class _Track:
    """One native interval of one instrument: rows with their open and close times."""

    interval: str
    rows: np.ndarray
    open_ms: np.ndarray
    close_ms: np.ndarray

    @property
    def step_ms(self) -> int | None:
        return INTERVAL_MS.get(self.interval)


@dataclass(frozen=True, eq=False)
class _Listing:
    instrument: Instrument
    tracks: tuple[_Track, ...]  # finest interval first
    last_close: int
    half_spread: float = 0.0  # Roll's estimate from the finest track
    funding: np.ndarray = field(default_factory=lambda: NO_FUNDING)  # (n, 2) time ms, rate


def load_replay_folder(folder: str | Path
                       ) -> tuple[list[CandleSeries], list[tuple[Path, str]], list[FundingSeries]]:
    """A folder's candle series, the files refused with why, and its funding series (funding
    files are loaded as funding, not refused as candles; one that does not load is refused
    with the funding loader's reason)."""
    series, refused = load_folder(folder)
    funding, funding_refused = load_funding_folder(folder)
    refused = [(p, r) for p, r in refused if not is_funding_file(p)] + funding_refused
    return series, sorted(refused), funding


def _market(s: CandleSeries | FundingSeries) -> str:
    return s.market or (s.sources[0].parent.name if s.sources else "") or "file"


def match_funding(series: Sequence[CandleSeries], funding: Sequence[FundingSeries]
                  ) -> tuple[dict[str, np.ndarray], list[tuple[Path, str]]]:
    """Each funding series's replay symbol: the one whose candles have its symbol and market,
    else the only one with its symbol. Returns (symbol → rows, files matched to nothing)."""
    names = instrument_names(series)
    exact: dict[tuple[str, str], str] = {}
    by_symbol: dict[str, set[str]] = {}
    for name, s in zip(names, series):
        exact[(s.symbol, _market(s))] = name
        by_symbol.setdefault(s.symbol, set()).add(name)
    out: dict[str, np.ndarray] = {}
    unmatched: list[tuple[Path, str]] = []
    for f in funding:
        name = exact.get((f.symbol, f.market))
        if name is None and len(by_symbol.get(f.symbol, ())) == 1:
            (name,) = by_symbol[f.symbol]
        if name is None:
            unmatched.extend((p, f"funding rates of {f.symbol} ({f.market or 'no market'}) "
                                 "match no candle series in the folder") for p in f.sources)
            continue
        out[name] = f.rows
    return out, unmatched


def instrument_names(series: Sequence[CandleSeries]) -> list[str]:
    """The replay symbol of each series: plain, or ``SYMBOL.market`` where markets collide.

    A series whose file names no market takes its folder's name as the market.
    """
    markets: dict[str, set[str]] = {}
    for s in series:
        markets.setdefault(s.symbol, set()).add(_market(s))
    return [s.symbol if len(markets[s.symbol]) == 1 else f"{s.symbol}.{_market(s)}"
            for s in series]


def replay_start_ms(source: str | Path | Sequence[CandleSeries],
                    start_ms: int | None = None) -> int:
    """Where the replay's clock starts: ``start_ms`` if given, else the earliest candle.

    A given start must come before the data's last candle closes.
    """
    series = load_folder(source)[0] if isinstance(source, (str, Path)) else list(source)
    if not series:
        raise ExchangeError(f"replay: no candle series in {source}")
    if start_ms is None:
        return min(int(s.rows[0, 0]) for s in series)
    end = max(int(s.close_ms[-1]) for s in series)
    if start_ms >= end:
        raise ExchangeError(f"replay: start {fmt_ms(start_ms)} is after the data ends "
                            f"({fmt_ms(end)})")
    return int(start_ms)


def infer_tick(prices: np.ndarray, finest: int = 10) -> Decimal:
    """The coarsest power-of-ten tick on which all prices lie (down to 1e-``finest``)."""
    for k in range(finest + 1):
        scaled = prices * 10.0 ** k
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            return Decimal(1).scaleb(-k)
    return Decimal(1).scaleb(-finest)


def infer_qty_step(price: float) -> Decimal:
    """A power-of-ten lot worth about ten quote units or less (1e-6 to 1)."""
    exponent = math.floor(math.log10(10.0 / price))
    return Decimal(1).scaleb(min(0, max(-6, exponent)))


def resample(rows: np.ndarray, step_ms: int, start_ms: int, end_ms: int,
             now: int) -> np.ndarray:
    """Aggregate visible candles into ``step_ms`` buckets with open time in [start, end).

    Only buckets that have closed by ``now`` are returned; a bucket with missing source
    candles (an illiquid minute) is made of the candles it has.
    """
    first = -(-start_ms // step_ms) * step_ms
    opens = rows[:, 0].astype(np.int64)
    buckets = opens - opens % step_ms
    keep = (buckets >= first) & (buckets < end_ms) & (buckets + step_ms <= now)
    return aggregate_buckets(rows[keep], step_ms)


def funding_interval(rates: np.ndarray) -> int:
    """A funding file's interval: the most common step between its times where that is one
    of Bybit's (1, 2, 4 or 8 hours), else 8 hours. The books charge a symbol at the times on
    its interval's grid, as the venue charges the file's rows."""
    times = np.asarray(rates, dtype=np.float64).reshape(-1, 2)[:, 0].astype(np.int64)
    steps = np.diff(np.unique(times))
    if len(steps):
        values, counts = np.unique(steps, return_counts=True)
        common = int(values[np.argmax(counts)])
        if common in FUNDING_INTERVALS_MS:
            return common
    return FUNDING_PERIOD_MS


def _listings(series: Sequence[CandleSeries],
              funding: dict[str, np.ndarray] | None = None) -> dict[str, _Listing]:
    funding = funding or {}
    grouped: dict[str, list[CandleSeries]] = {}
    for name, s in zip(instrument_names(series), series):
        grouped.setdefault(name, []).append(s)
    out = {}
    for name, group in sorted(grouped.items()):
        tracks = []
        for s in group:
            rows = np.array(s.rows, dtype=np.float64)
            rows.setflags(write=False)
            tracks.append(_Track(s.interval, rows, s.open_ms, s.close_ms))
        tracks.sort(key=lambda t: t.step_ms or 31 * DAY_MS)
        first = min(tracks, key=lambda t: t.open_ms[0])
        prices = np.concatenate([t.rows[:, 1:5].ravel() for t in tracks])
        step = infer_qty_step(float(first.rows[0, 4]))
        head = group[0]
        out[name] = _Listing(
            Instrument(symbol=name, status="Trading", base_coin=head.base,
                       quote_coin=head.quote, tick_size=infer_tick(prices), qty_step=step,
                       min_order_qty=step, launch_time=int(first.open_ms[0]),
                       funding_interval_ms=funding_interval(funding.get(name, NO_FUNDING))),
            tuple(tracks), max(int(t.close_ms[-1]) for t in tracks),
            roll_half_spread(tracks[0].rows[:, 4]), funding.get(name, NO_FUNDING))
    return out


class ReplayExchange:
    """The Exchange protocol over real candle files; see the module docstring."""

    name = "replay"
    capabilities = frozenset({PAPER, BATCH_FILLS})

    def __init__(self, clock: Clock, folder: str | Path | None, *, taker_fee: float = 0.00055,
                 slippage_bps: float = 2.0, starting_balance: float = 100_000.0,
                 inline: bool = False,
                 loaded: tuple[Sequence[CandleSeries], Sequence[tuple[Path, str]]] | None = None,
                 funding: Sequence[FundingSeries] | None = None) -> None:
        """Load ``folder`` (or take ``loaded = (series, refused)`` and ``funding`` from
        :func:`load_replay_folder`).

        ``inline=True`` computes on the event loop (tests on trio's autojump clock).
        """
        if loaded is None:
            if folder is None:
                raise ExchangeError("replay needs a folder of candle files")
            candles, refused_files, funding = load_replay_folder(folder)
            loaded = (candles, refused_files)
        series, refused = loaded
        rates, unmatched = match_funding(series, funding or [])
        self.refused: list[tuple[Path, str]] = sorted([*refused, *unmatched])
        if not series:
            why = "; ".join(f"{p.name}: {r}" for p, r in self.refused[:5])
            raise ExchangeError(f"replay: no usable candle files in {folder}"
                                + (f" ({why})" if why else ""))
        self.clock = clock
        self.inline = inline
        self._listings = _listings(series, rates)
        self.broker = PaperBroker(
            self.last_price, taker_fee=taker_fee, slippage_bps=slippage_bps,
            starting_balance=starting_balance,
            tick_of=lambda s: self._listing(s).instrument.tick_size,
            step_of=lambda s: self._listing(s).instrument.qty_step,
            half_spread_of=self.half_spread, funding_of=self._funding_between,
            funding_price_at=self.price_at)

    # -- the market at the clock's time --------------------------------------------------------

    def symbols(self) -> list[str]:
        return list(self._listings)

    def intervals(self, symbol: str) -> tuple[str, ...]:
        """The native intervals of a symbol's files, finest first."""
        return tuple(t.interval for t in self._listing(symbol).tracks)

    def serves(self, symbol: str, interval: str) -> bool:
        """Whether ``klines(symbol, interval, ...)`` is answered (natively or resampled)."""
        return self._source(self._listing(symbol), interval) is not None

    @staticmethod
    def _source(listing: _Listing, interval: str) -> _Track | None:
        """The native track of ``interval``, else the finest one that resamples into it."""
        for track in listing.tracks:
            if track.interval == interval:
                return track
        step = INTERVAL_MS.get(interval)
        if step is None or step > DAY_MS:
            return None
        return next((t for t in listing.tracks if t.step_ms is not None and t.step_ms < step
                     and step % t.step_ms == 0), None)

    def _listing(self, symbol: str) -> _Listing:
        try:
            return self._listings[symbol]
        except KeyError:
            raise ExchangeError(f"replay: unknown symbol {symbol!r}") from None

    def _status(self, listing: _Listing, now: int) -> str:
        if now < listing.instrument.launch_time:
            return "PreLaunch"
        return "Trading" if now < listing.last_close else "Closed"

    @staticmethod
    def _visible(track: _Track, now: int) -> int:
        return int(np.searchsorted(track.close_ms, now, side="right"))

    def _latest(self, listing: _Listing, now: int) -> tuple[_Track, int] | None:
        """The track whose visible candles closed last (finest on a tie), and their count."""
        best: tuple[_Track, int] | None = None
        for track in listing.tracks:
            n = self._visible(track, now)
            if n and (best is None or track.close_ms[n - 1] > best[0].close_ms[best[1] - 1]):
                best = (track, n)
        return best

    def last_price(self, symbol: str) -> float | None:
        """Close of the last candle that has closed on the clock."""
        return self.price_at(symbol, now_ms(self.clock))

    def price_at(self, symbol: str, t_ms: int) -> float | None:
        """Close of the last candle that had closed at ``t_ms``."""
        latest = self._latest(self._listing(symbol), t_ms)
        return None if latest is None else float(latest[0].rows[latest[1] - 1, 4])

    def half_spread(self, symbol: str) -> float:
        """The symbol's half spread (Roll's estimate), as a fraction of the price."""
        return self._listing(symbol).half_spread

    def _funding_between(self, symbol: str, start_ms: int, end_ms: int
                         ) -> list[tuple[int, float]]:
        """Funding in (start, end] while the symbol has candles (none after its data ends:
        there is no price to charge it at, as for a contract that has settled)."""
        listing = self._listing(symbol)
        rows = listing.funding
        lo = int(np.searchsorted(rows[:, 0], start_ms, side="right"))
        hi = int(np.searchsorted(rows[:, 0], min(end_ms, listing.last_close), side="right"))
        return [(int(t), float(r)) for t, r in rows[lo:hi]]

    def fill(self, intent: OrderIntent, now: int) -> Fill:
        """A paper fill at the last visible close; only reducing orders once data has ended."""
        listing = self._listing(intent.symbol)
        status = self._status(listing, now)
        if status != "Trading" and not intent.reduce_only:
            raise ExchangeError(f"replay: {intent.symbol} is {status} at {fmt_ms(now)} (its "
                                f"data covers {fmt_ms(listing.instrument.launch_time)} to "
                                f"{fmt_ms(listing.last_close)})")
        return self.broker.fill(intent, now)

    def _instruments(self, now: int) -> list[Instrument]:
        out = []
        for listing in self._listings.values():
            inst = listing.instrument
            out.append(Instrument(inst.symbol, self._status(listing, now), inst.base_coin,
                                  inst.quote_coin, inst.tick_size, inst.qty_step,
                                  inst.min_order_qty, inst.launch_time,
                                  funding_interval_ms=inst.funding_interval_ms))
        return out

    def _tickers(self, now: int) -> list[Ticker]:
        out = []
        for name, listing in self._listings.items():
            if self._status(listing, now) != "Trading":
                continue
            latest = self._latest(listing, now)
            if latest is None:
                continue
            track, n = latest
            lo = int(np.searchsorted(track.close_ms, now - DAY_MS, side="right"))
            day = track.rows[lo:n]
            last = float(track.rows[n - 1, 4])
            bid, ask = quote_around(last, listing.half_spread, listing.instrument.tick_size)
            out.append(Ticker(name, last, float(day[:, 6].sum()), float(day[:, 5].sum()),
                              bid, ask))
        return out

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int,
                now: int) -> np.ndarray:
        """Candles visible at ``now`` with open time in [start, end), as an (n, 7) array."""
        listing = self._listing(symbol)
        src = self._source(listing, interval)
        if src is None:
            raise ExchangeError(f"replay: {symbol} has {', '.join(self.intervals(symbol))} "
                                f"candles; {interval} is neither one of them nor resampled "
                                "from them")
        if src.interval == interval:
            lo = int(np.searchsorted(src.open_ms, start_ms, side="left"))
            hi = min(int(np.searchsorted(src.open_ms, end_ms, side="left")),
                     self._visible(src, now))
            return src.rows[lo:max(lo, hi)]
        step = INTERVAL_MS[interval]
        lo = int(np.searchsorted(src.open_ms, start_ms - step, side="left"))
        hi = min(int(np.searchsorted(src.open_ms, end_ms + step, side="left")),
                 self._visible(src, now))
        return resample(src.rows[lo:max(lo, hi)], step, start_ms, end_ms, now)

    # -- the Exchange protocol ---------------------------------------------------------------

    async def _run(self, fn: Callable, *args):
        """Array work (read-only data, ``now`` passed in) in a worker thread unless inline."""
        if self.inline:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    async def server_time_ms(self) -> int:
        return now_ms(self.clock)

    async def instruments(self) -> list[Instrument]:
        return self._instruments(now_ms(self.clock))

    async def tickers(self) -> list[Ticker]:
        return await self._run(self._tickers, now_ms(self.clock))

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        arr = await self.klines_array(symbol, start_ms, end_ms, interval)
        return [Candle(symbol, interval, int(r[0]), *map(float, r[1:])) for r in arr]

    async def klines_array(self, symbol: str, start_ms: int, end_ms: int,
                           interval: str = "1m") -> np.ndarray:
        """Fast path for the feed: the same candles as a read-only numpy array (n, 7)."""
        return await self._run(self.candles, symbol, interval, start_ms, end_ms,
                               now_ms(self.clock))

    # The paper book prices through the clock, which reads trio's time: it only works on the
    # event loop (a worker thread would see the clock's start), and fills are cheap.

    async def place_order(self, intent: OrderIntent) -> Fill:
        await trio.lowlevel.checkpoint()
        return self.fill(intent, now_ms(self.clock))

    async def place_orders(self, intents: Sequence[OrderIntent]) -> list[Fill | ExchangeError]:
        await trio.lowlevel.checkpoint()
        now = now_ms(self.clock)
        return fill_each(lambda intent: self.fill(intent, now), intents)

    async def order_fill(self, symbol: str, order_link_id: str) -> Fill | None:
        await trio.lowlevel.checkpoint()
        return self.broker.fill_of(order_link_id)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def cancel_order(self, symbol: str, order_id: str) -> None:
        raise ExchangeError("paper market orders fill at once; there is nothing to cancel")

    async def fee_rates(self) -> dict[str, float]:
        """None from the venue: the configured taker fee applies to every symbol."""
        return {}

    async def funding_rates(self, symbol: str, start_ms: int, end_ms: int
                            ) -> list[tuple[int, float]]:
        await trio.lowlevel.checkpoint()
        return self._funding_between(symbol, start_ms, min(end_ms, now_ms(self.clock)))

    async def positions(self) -> list[Position]:
        await trio.lowlevel.checkpoint()
        self.broker.settle_funding(now_ms(self.clock))
        return [p for p in self.broker.positions.values() if p.qty]

    async def balance(self) -> Balance:
        await trio.lowlevel.checkpoint()
        self.broker.settle_funding(now_ms(self.clock))
        return self.broker.balance()

    def rate_limit_usage(self) -> float:
        return 0.0
