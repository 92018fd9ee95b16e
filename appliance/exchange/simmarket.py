"""A deterministic synthetic market of USDT perpetuals.

Every 1m candle is a pure function of ``(seed, symbol, minute)``: the same question always gets
the same answer, whether it comes from the appliance on its virtual clock, from the fake Bybit
server on the real UTC clock, or from a test. That is what lets a backfill, a live feed and a
replay agree to the last digit.

How a day is made (all vectorised with numpy, one day of all symbols at a time):

* Day level: a common BTC-like factor and per-symbol idiosyncratic daily returns with GARCH-like
  volatility clustering, accumulated from ``EPOCH`` so each day's opening price is fixed.
* Minute level: Student-t shocks (fat tails) scaled by a log-AR(1) stochastic volatility
  (clustering) and a U-shaped time-of-day profile, a common factor share ``beta``, a regime per
  (symbol, day) with a little autocorrelation (momentum or mean reversion), and a slow drift
  with hours of memory — the "little learnable structure", sized so that it can pay for a
  round trip's fees at the 5m/1h horizons the models trade. The minute path is then bridged
  so the day closes where the day level says.
* Turnover follows absolute returns around a per-symbol base level, which spans from billions
  down to a few million dollars a day, so some symbols sit below the $10M tradable bar and a few
  cross it as their daily activity multiplier drifts.
* Lifecycle: each symbol has a launch day; some are delisted and relisted periodically, some
  for good, so discovery sees listings and delistings over time.
* The universe: ``pairs`` symbols (``sim.pairs``), the 24 hand-written ones first, then
  generated ones (:mod:`appliance.exchange.simuniverse`). The random draws of the generated
  symbols come from their own streams, per block of :data:`BLOCK` symbols, so a symbol's candles
  are the same in a universe of 24, 150 or 400.
* Costs of trading it: a constant half spread per symbol (:meth:`SimMarket.half_spread`,
  0.5 bp for BTC up to 10 bp for the thinnest), which the tickers quote as bid/ask around the
  last close and the paper venue charges on every fill; and a funding rate every 8 hours (:meth:`SimMarket
  .funding_rate`), mostly positive around 0.01%, some negative, a pure function of
  ``(seed, symbol, funding time)``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal

import numpy as np

from appliance.domain import Candle, Instrument, Ticker
from appliance.exchange.base import quote_around
from appliance.exchange.simshock import Shock
from appliance.exchange.simuniverse import (BETA_MAX, HAND_WRITTEN, MAX_PAIRS, SimSymbol,
                                            build_universe, spread_of)
from models.funding import FUNDING_INTERVALS_MS, FUNDING_PERIOD_MS, funding_times


def lfilter(b, a, x, axis=-1, zi=None):
    """``scipy.signal.lfilter``, imported on the first use: scipy.signal takes about a second
    to import, and every ``methtrader`` command imports this module (its parser names the
    sim's universe size), though only the market's generation filters anything."""
    from scipy.signal import lfilter as scipy_lfilter

    return scipy_lfilter(b, a, x, axis=axis, zi=zi)


MINUTE_MS = 60_000
DAY_MS = 86_400_000
MINUTES_PER_DAY = 1440
EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: the market's first day
TREND_SHARE = 0.10  # drift std as a share of a minute's volatility
TREND_MINUTES = 360.0  # the drift's memory
BLOCK = 8  # generated symbols share a random stream per block of this many (divides 376)
CACHE_ROW_DAYS = 1560  # symbol-days kept computed (LRU by block): ~108 MB, as 65 days of 24 had
UNIVERSE: tuple[SimSymbol, ...] = HAND_WRITTEN  # the default universe (sim.pairs = 24)
_N_BASE = len(HAND_WRITTEN)
DEFAULT_PAIRS = _N_BASE
_MAX_GENERATED = MAX_PAIRS - _N_BASE
FUNDING_MEAN = 1e-4  # 0.01% per 8 h, Bybit's usual rate (pro rata for a shorter interval)
#: generated pairs (beyond the 24 hand-written ones) funded every 4 hours, as Bybit sets for
#: part of its tail; Bybit does not publish the split, so the share is an assumption
TAIL_4H_SHARE = 0.25
FUNDING_CAP = 0.005  # Bybit's upper/lowerFundingRate on the fake's instruments
FUNDING_KEPT = 65_536  # rates kept for the next ask (a dict of them is cleared when full)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def _minute_draws(rng: np.random.Generator, k: int, n: int) -> tuple[np.ndarray, ...]:
    """The day's minute-level draws for ``k`` symbols, in the order the market has always made
    them: shocks, log-vol noise, regimes, wicks, turnover noise."""
    z = rng.standard_t(4, (k, n)) / math.sqrt(2.0)
    h_noise = rng.normal(0, 1, (k, n))
    phi = rng.choice([-0.12, 0.0, 0.12], size=k, p=[0.3, 0.3, 0.4])
    wick = np.abs(rng.normal(0, 1, (2, k, n)))
    turnover_noise = rng.normal(0, 0.25, (k, n))
    return z, h_noise, phi, wick, turnover_noise


def _tod_profile() -> np.ndarray:
    m = np.arange(MINUTES_PER_DAY)
    # busier around 00:00, 08:00 and 13:30-16:00 UTC; normalised to mean square 1
    prof = (1.0 + 0.35 * np.cos(2 * np.pi * m / MINUTES_PER_DAY)
            + 0.25 * np.exp(-((m - 870) / 120.0) ** 2) + 0.15 * np.exp(-((m - 480) / 90.0) ** 2))
    return prof / np.sqrt(np.mean(prof ** 2))


_TOD = _tod_profile()


class SimMarket:
    """The synthetic market. Thread-safe (one lock around its cache of computed days)."""

    def __init__(self, seed: int = 7, delistings: dict[str, int] | None = None,
                 trend_share: float = TREND_SHARE, pairs: int = _N_BASE,
                 shock: Shock | None = None,
                 funding_intervals: Mapping[str, int] | None = None,
                 cache_symbol_days: int = CACHE_ROW_DAYS) -> None:
        """``delistings`` plants a delisting: symbol → the moment (ms) it settles and closes;
        the venue announces it (``delivery_time``) a day before (``sim.delist``).
        ``trend_share`` sizes the learnable drift (``sim.trend_share``): 0 is a market with no
        edge to find beyond the daily regimes, larger values are easier markets.
        ``pairs`` is the size of the universe (``sim.pairs``, 24..400). ``shock`` plants a
        regime break (:mod:`appliance.exchange.simshock`, ``sim.shock_at``).
        ``funding_intervals`` gives symbols another funding interval than their own (ms, one
        of :data:`models.funding.FUNDING_INTERVALS_MS`): 8 hours, or 4 for
        :data:`TAIL_4H_SHARE` of the generated pairs. ``cache_symbol_days``: how many
        symbol-days of computed candles are kept (~70 KB each); older ones are computed again
        when asked."""
        if not _N_BASE <= pairs <= MAX_PAIRS:
            raise ValueError(f"sim pairs must be in [{_N_BASE}, {MAX_PAIRS}], not {pairs}")
        self.seed = int(seed)
        self.shock = shock
        self.trend_share = float(trend_share)
        self.delistings = dict(delistings or {})
        self._blocks = -(-(pairs - _N_BASE) // BLOCK)  # generated blocks
        # the specs of whole blocks (a block is computed as one); the universe is the first pairs
        self._specs = build_universe(self.seed, _N_BASE + self._blocks * BLOCK)
        self.universe = self._specs[:pairs]
        self._index = {s.symbol: i for i, s in enumerate(self.universe)}
        self._funding_every = {
            s.symbol: 4 * 3_600_000 for i, s in enumerate(self.universe)
            if i >= _N_BASE and _rng(self.seed, 4_000_041, i).random() < TAIL_4H_SHARE}
        self._funding_every.update(funding_intervals or {})
        for symbol, every in (funding_intervals or {}).items():
            if symbol not in self._index or every not in FUNDING_INTERVALS_MS:
                raise ValueError(f"sim funding interval {symbol}={every}: the symbol must be in "
                                 f"the universe and the interval one of {FUNDING_INTERVALS_MS} ms")
        # (symbol index, funding time) -> rate: the venue's account and every book ask for the
        # same rates on a funding bar, and two seeded generators cost ~35 us a rate
        self._funding: dict[tuple[int, int], float] = {}
        # constant per symbol, asked for every fill: made once
        self._half_spreads = {s.symbol: spread_of(s) for s in self.universe}
        self._tick_of = {s.symbol: Decimal(s.tick) for s in self.universe}
        self._step_of = {s.symbol: Decimal(s.qty_step) for s in self.universe}
        self._betas = np.array([s.beta for s in self._specs])
        self._base_vol = np.array([s.daily_vol for s in self._specs])
        self._base_turnover = np.array([s.turnover_usd for s in self._specs])
        self._ticks = np.array([float(s.tick) for s in self._specs])
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # LRU
        self._cache_limit = int(cache_symbol_days)
        self._cached_rows = 0
        self._lock = threading.Lock()
        self._levels = np.zeros((0, len(self._specs)))  # opening log-price per day
        self._day_sigma = np.zeros((0, len(self._specs)))
        self._activity = np.zeros((0, len(self._specs)))

    # -- the universe ------------------------------------------------------------------------

    def symbols(self) -> list[str]:
        return [s.symbol for s in self.universe]

    def spec(self, symbol: str) -> SimSymbol:
        try:
            return self.universe[self._index[symbol]]
        except KeyError:
            raise KeyError(f"unknown sim symbol {symbol!r}") from None

    def half_spread(self, symbol: str) -> float:
        """The half spread of ``symbol`` as a fraction of the price (constant in time)."""
        h = self._half_spreads.get(symbol)
        return h if h is not None else spread_of(self.spec(symbol))

    def tick(self, symbol: str) -> Decimal:
        t = self._tick_of.get(symbol)
        return t if t is not None else Decimal(self.spec(symbol).tick)

    def qty_step(self, symbol: str) -> Decimal:
        q = self._step_of.get(symbol)
        return q if q is not None else Decimal(self.spec(symbol).qty_step)

    # -- lifecycle -------------------------------------------------------------------------

    def listed(self, symbol: str, t_ms: int) -> bool:
        spec = self.spec(symbol)
        if symbol in self.delistings and t_ms >= self.delistings[symbol]:
            return False
        day = (t_ms - EPOCH_MS) // DAY_MS
        if day < spec.launch_day or 0 < spec.delist_day <= day:
            return False
        if spec.cycle_days:
            period = spec.cycle_days + max(1, spec.cycle_days // 3)
            return (day - spec.launch_day) % period < spec.cycle_days
        return True

    def instruments(self, t_ms: int) -> list[Instrument]:
        out = []
        for s in self.universe:
            if (t_ms - EPOCH_MS) // DAY_MS < s.launch_day:
                continue  # not announced yet
            out.append(Instrument(
                symbol=s.symbol, status="Trading" if self.listed(s.symbol, t_ms) else "Closed",
                base_coin=s.symbol[:-4], quote_coin="USDT", tick_size=Decimal(s.tick),
                qty_step=Decimal(s.qty_step), min_order_qty=Decimal(s.qty_step),
                launch_time=EPOCH_MS + s.launch_day * DAY_MS,
                delivery_time=self.delivery_time(s.symbol, t_ms),
                funding_interval_ms=self.funding_interval(s.symbol)))
        return out

    def delivery_time(self, symbol: str, t_ms: int) -> int:
        """When an announced delisting settles (0 when none is announced at ``t_ms``): a
        planted one (``sim.delist``), else the symbol's own ``delist_day``."""
        at = self.delistings.get(symbol)
        if at is None and self.spec(symbol).delist_day:
            at = EPOCH_MS + self.spec(symbol).delist_day * DAY_MS
        return at if at is not None and t_ms >= at - DAY_MS else 0

    # -- day level ---------------------------------------------------------------------------

    def _extend_days(self, upto: int) -> None:
        """Compute day-level state for days [0, upto] (cumulative from the epoch)."""
        have = self._levels.shape[0]
        if upto < have:
            return
        n_sym = len(self._specs)
        n_gen = n_sym - _N_BASE
        levels = np.empty((upto + 1, n_sym))
        sigma = np.empty((upto + 1, n_sym))
        activity = np.empty((upto + 1, n_sym))
        levels[:have], sigma[:have], activity[:have] = (
            self._levels, self._day_sigma, self._activity)
        base_vol, betas = self._base_vol, self._betas
        if have == 0:
            levels[0] = np.log([s.price for s in self._specs])
            sigma[0] = base_vol
            activity[0] = 0.0
            start = 1
        else:
            start = have
        for d in range(start, upto + 1):
            rng = _rng(self.seed, 1_000_003, d)
            shock_f, shock_i = rng.standard_t(5, 2 * _N_BASE).reshape(2, _N_BASE) / math.sqrt(5 / 3)
            act_noise = rng.normal(0, 0.6, _N_BASE)
            if n_gen:  # one stream for every generated symbol, drawn in full: prefix-stable
                gen = _rng(self.seed, 1_000_003, d, 1)
                shock_i = np.concatenate(
                    [shock_i, gen.standard_t(5, _MAX_GENERATED)[:n_gen] / math.sqrt(5 / 3)])
                act_noise = np.concatenate([act_noise,
                                            gen.normal(0, 0.6, _MAX_GENERATED)[:n_gen]])
            prev_sigma = sigma[d - 1]
            # previous day's return drives today's vol (GARCH(1,1)-like in relative terms)
            prev_ret = levels[d - 1] - (levels[d - 2] if d >= 2 else levels[d - 1])
            var = (0.05 * base_vol ** 2 + 0.10 * prev_ret ** 2 + 0.85 * prev_sigma ** 2)
            sigma[d] = np.clip(np.sqrt(var), 0.3 * base_vol, 4 * base_vol)
            factor = shock_f[0] * 0.6
            ret = sigma[d] * (betas / BETA_MAX * factor + np.sqrt(0.64) * shock_i)
            ret = np.clip(ret, -0.35, 0.35) - 0.5 * sigma[d] ** 2 * 0.1
            levels[d] = levels[d - 1] + ret
            activity[d] = 0.7 * activity[d - 1] + 0.3 * act_noise
        self._levels, self._day_sigma, self._activity = levels, sigma, activity

    # -- minute level ------------------------------------------------------------------------

    @staticmethod
    def _rows(block: int) -> range:
        """The rows (symbol indices) of a block: 0 is the hand-written symbols, b > 0 the
        b-th block of generated ones."""
        if block == 0:
            return range(_N_BASE)
        return range(_N_BASE + (block - 1) * BLOCK, _N_BASE + block * BLOCK)

    def _block_of(self, index: int) -> int:
        return 0 if index < _N_BASE else 1 + (index - _N_BASE) // BLOCK

    def _day(self, day: int, blocks: list[int]) -> list[np.ndarray]:
        """Arrays (rows, 1440, 6) of open, high, low, close, volume, turnover for one day, one
        per block asked for; the blocks not cached are computed together."""
        if day < 0:
            raise ValueError("the sim market starts on 2024-01-01")
        with self._lock:
            return self._cached_day(day, blocks)

    def _cached_day(self, day: int, blocks: list[int]) -> list[np.ndarray]:
        missing = [b for b in blocks if (day, b) not in self._cache]
        if missing:
            self._fund_day(day, missing)
            out = self._compute(day, missing)
            for b in missing:
                k = len(self._rows(b))
                # a copy when several were computed, so each can be evicted on its own
                part = out[:k] if len(missing) == 1 else out[:k].copy()
                part.setflags(write=False)
                self._cache[(day, b)] = part
                self._cached_rows += k
                out = out[k:]
        for b in blocks:
            self._cache.move_to_end((day, b))
        while self._cached_rows > self._cache_limit and len(self._cache) > len(blocks):
            self._cached_rows -= len(self._cache.popitem(last=False)[1])
        return [self._cache[(day, b)] for b in blocks]

    def _compute(self, day: int, blocks: list[int]) -> np.ndarray:
        """One day of the blocks' symbols, their rows in the order of ``blocks``. Each block
        draws from its own streams, so its rows do not depend on which others are computed."""
        self._extend_days(day + 1)
        n = MINUTES_PER_DAY
        rows = np.concatenate([np.arange(r.start, r.stop) for r in map(self._rows, blocks)])
        n_sym = len(rows)
        rng = _rng(self.seed, 2_000_003, day)
        f = rng.standard_t(4, n) / math.sqrt(2.0)
        parts = [_minute_draws(rng if b == 0 else _rng(self.seed, 2_000_003, day, b),
                               len(self._rows(b)), n) for b in blocks]
        z, h_noise, phi, turnover_noise = (np.concatenate([p[i] for p in parts])
                                           for i in (0, 1, 2, 4))
        wick = np.concatenate([p[3] for p in parts], axis=1)
        betas = self._betas[rows][:, None]
        # stochastic volatility: log-vol AR(1), mean-reverting within the day
        h = lfilter([0.08], [1.0, -0.985], h_noise, axis=1)
        vol = np.exp(h - 0.5 * np.var(h, axis=1, keepdims=True)) * _TOD
        raw = (0.6 * f[None, :] * (betas / BETA_MAX) + 0.8 * z) * vol
        # regime: momentum (phi > 0) or mean reversion (phi < 0) for this symbol and day
        for value in np.unique(phi):
            sel = phi == value
            raw[sel] = lfilter([1.0], [1.0, -value], raw[sel], axis=1)
        raw /= np.sqrt(np.mean(raw ** 2, axis=1, keepdims=True))
        sig = self._day_sigma[day, rows][:, None] / math.sqrt(n)
        r = (raw + self.trend_share * self._trend(day, blocks)) * sig
        target = (self._levels[day + 1, rows] - self._levels[day, rows])[:, None]
        r += (target - r.sum(axis=1, keepdims=True)) / n  # bridge to the day's close
        logp = self._levels[day, rows][:, None] + np.concatenate(
            [np.zeros((n_sym, 1)), np.cumsum(r, axis=1)], axis=1)
        prices = np.exp(logp)
        opens, closes = prices[:, :-1], prices[:, 1:]
        wick = wick * sig * 0.8
        highs = np.maximum(opens, closes) * np.exp(wick[0])
        lows = np.minimum(opens, closes) * np.exp(-wick[1])
        ticks = self._ticks[rows][:, None]
        opens, closes = np.round(opens / ticks) * ticks, np.round(closes / ticks) * ticks
        highs = np.maximum(np.ceil(highs / ticks) * ticks, np.maximum(opens, closes))
        lows = np.minimum(np.floor(lows / ticks) * ticks, np.minimum(opens, closes))
        act = np.exp(self._activity[day, rows])[:, None]
        intensity = (0.4 + np.abs(r) / sig) * _TOD * act
        turnover = (self._base_turnover[rows][:, None] / n * intensity
                    / np.mean(intensity, axis=1, keepdims=True) * act)
        turnover *= np.exp(turnover_noise)
        volume = turnover / closes
        out = np.stack([opens, highs, lows, closes, volume, turnover], axis=-1)
        out.setflags(write=False)
        return out

    def _trend(self, day: int, blocks: list[int]) -> np.ndarray:
        """A slow drift per symbol (AR(1), ~3 h memory, unit stationary std): hours-long
        trends that recent returns reveal and that outlast a round trip's fees — the
        learnable structure a model can find after costs."""
        a = math.exp(-1.0 / TREND_MINUTES)
        noise, start = [], []
        for b in blocks:
            rng = _rng(self.seed, 3_000_017, day, *([b] if b else []))
            k = len(self._rows(b))
            noise.append(rng.normal(0, math.sqrt(1 - a * a), (k, MINUTES_PER_DAY)))
            start.append(rng.normal(0, 1, (k, 1)))
        return lfilter([1.0], [1.0, -a], np.concatenate(noise), axis=1,
                       zi=a * np.concatenate(start))[0]

    def candles(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        """1m candles with open_time in [start_ms, end_ms), oldest first, as an (n, 7) array
        of open_time, open, high, low, close, volume, turnover. Minutes when the symbol was not
        listed are absent."""
        idx = self._index.get(symbol)
        if idx is None:
            raise KeyError(f"unknown sim symbol {symbol!r}")
        end_ms = min(end_ms, self.delistings.get(symbol, end_ms))
        start = max(start_ms - start_ms % MINUTE_MS, EPOCH_MS)
        if start % MINUTE_MS:
            start += MINUTE_MS - start % MINUTE_MS
        if end_ms <= start:
            return np.zeros((0, 7))
        parts = []
        b = self._block_of(idx)
        row = idx - self._rows(b).start
        d0, d1 = (start - EPOCH_MS) // DAY_MS, (end_ms - 1 - EPOCH_MS) // DAY_MS
        for day in range(d0, d1 + 1):
            day_start = EPOCH_MS + day * DAY_MS
            if not self.listed(symbol, day_start):
                continue
            lo = max(0, (start - day_start) // MINUTE_MS)
            hi = min(MINUTES_PER_DAY, -(-(end_ms - day_start) // MINUTE_MS))
            if hi <= lo:
                continue
            block = self._day(day, [b])[0][row, lo:hi]
            times = day_start + np.arange(lo, hi, dtype=np.int64) * MINUTE_MS
            parts.append(np.column_stack([times.astype(np.float64), block]))
        if not parts:
            return np.zeros((0, 7))
        out = np.concatenate(parts)
        if self.shock is not None:
            out = self.shock.apply(symbol, out, float(self.spec(symbol).tick), self._open_at)
        return out

    def _open_at(self, symbol: str, t_ms: int) -> float:
        """The unshocked open of the minute at ``t_ms`` (listed or not)."""
        day, minute = divmod((t_ms - EPOCH_MS) // MINUTE_MS, MINUTES_PER_DAY)
        idx = self._index[symbol]
        b = self._block_of(idx)
        return float(self._day(int(day), [b])[0][idx - self._rows(b).start, int(minute), 0])

    def precompute(self, start_ms: int, end_ms: int) -> None:
        """Compute the days covering [start_ms, end_ms) for every symbol in one vectorised
        pass per day (a question about every symbol, such as the tickers, asks this first;
        symbol by symbol, each block would be computed on its own)."""
        every = list(range(1 + self._blocks))
        first = max(0, (start_ms - EPOCH_MS) // DAY_MS)
        for day in range(first, (end_ms - 1 - EPOCH_MS) // DAY_MS + 1):
            self._day(day, every)

    def candle_records(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        arr = self.candles(symbol, start_ms, end_ms)
        return [Candle(symbol, "1m", int(row[0]), *map(float, row[1:])) for row in arr]

    def last_price(self, symbol: str, t_ms: int) -> float | None:
        """Close of the last minute that closed at or before ``t_ms``. Fills and the paper
        equity ask this per symbol, so the usual case reads the one minute from the computed
        day; only when that minute is missing (not listed) are recent candles searched."""
        end = t_ms - t_ms % MINUTE_MS
        minute = end - MINUTE_MS
        idx = self._index.get(symbol)
        if idx is None:
            raise KeyError(f"unknown sim symbol {symbol!r}")
        day, offset = divmod(minute - EPOCH_MS, DAY_MS)
        shocked = self.shock is not None and self.shock.hits(symbol) and minute >= \
            self.shock.at_ms  # the shock is applied to candles: read those
        if (not shocked and minute >= EPOCH_MS and minute < self.delistings.get(symbol, end)
                and self.listed(symbol, EPOCH_MS + day * DAY_MS)):
            b = self._block_of(idx)
            return float(self._day(day, [b])[0][idx - self._rows(b).start,
                                                 offset // MINUTE_MS, 3])
        arr = self.candles(symbol, end - 10 * MINUTE_MS, end)
        if not len(arr):
            arr = self.candles(symbol, end - 2 * DAY_MS, end)
        return float(arr[-1, 4]) if len(arr) else None

    def quote(self, symbol: str, last: float) -> tuple[float, float]:
        """Bid and ask around ``last``: :meth:`half_spread` each way, widened to the tick."""
        return quote_around(last, self.half_spread(symbol), self.tick(symbol))

    def tickers(self, t_ms: int) -> list[Ticker]:
        out = []
        end = t_ms - t_ms % MINUTE_MS
        self.precompute(end - DAY_MS, end)
        for s in self.universe:
            if not self.listed(s.symbol, t_ms):
                continue
            arr = self.candles(s.symbol, end - DAY_MS, end)
            if not len(arr):
                continue
            last = float(arr[-1, 4])
            bid, ask = self.quote(s.symbol, last)
            out.append(Ticker(s.symbol, last, float(arr[:, 6].sum()), float(arr[:, 5].sum()),
                              bid, ask))
        return out

    # -- funding -----------------------------------------------------------------------------

    def funding_interval(self, symbol: str) -> int:
        """How often ``symbol`` pays funding (ms): 8 hours unless planted otherwise."""
        return self._funding_every.get(symbol, FUNDING_PERIOD_MS)

    def funding_rate(self, symbol: str, t_ms: int) -> float:
        """The rate settled at funding time ``t_ms``: a per-(symbol, day) level around
        :data:`FUNDING_MEAN` plus noise per funding time, capped at ±:data:`FUNDING_CAP` and
        rounded to 1e-8 as Bybit quotes it. About one rate in seven is negative."""
        idx = self._index.get(symbol)
        if idx is None:
            raise KeyError(f"unknown sim symbol {symbol!r}")
        rate = self._funding.get((idx, t_ms))
        if rate is None:
            rate = self._keep_rate(idx, t_ms, _rng(self.seed, 4_000_037, idx,
                                                   (t_ms - EPOCH_MS) // DAY_MS).normal())
        return rate

    def _keep_rate(self, idx: int, t_ms: int, level: float) -> float:
        """Compute (from the day's ``level``) and keep the rate of symbol ``idx`` at ``t_ms``."""
        every = self._funding_every.get(self.universe[idx].symbol, FUNDING_PERIOD_MS)
        noise = _rng(self.seed, 4_000_039, idx, t_ms // every).normal()
        rate = FUNDING_MEAN * (every / FUNDING_PERIOD_MS) * (1.0 + 0.8 * level + 0.5 * noise)
        rate = round(min(FUNDING_CAP, max(-FUNDING_CAP, rate)), 8)
        if len(self._funding) >= FUNDING_KEPT:
            self._funding.clear()
        self._funding[(idx, t_ms)] = rate
        return rate

    def _fund_day(self, day: int, blocks: list[int]) -> None:
        """The day's funding rates of the blocks' symbols, computed with its candles: a
        funding bar then reads them, where two seeded generators a symbol (~35 us each) held
        the bar's orders by ~3 ms at 50 symbols."""
        start = EPOCH_MS + day * DAY_MS
        for b in blocks:
            for idx in self._rows(b):
                if idx >= len(self.universe):
                    break
                every = self._funding_every.get(self.universe[idx].symbol, FUNDING_PERIOD_MS)
                level = _rng(self.seed, 4_000_037, idx, day).normal()
                for t in range(start + (-start) % every, start + DAY_MS, every):
                    self._keep_rate(idx, t, level)

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
        """(time, rate) at the funding times in ``(start_ms, end_ms]`` while ``symbol`` was
        listed, oldest first."""
        self.spec(symbol)
        return [(t, self.funding_rate(symbol, t))
                for t in funding_times(max(start_ms, EPOCH_MS - 1), end_ms,
                                       self.funding_interval(symbol))
                if self.listed(symbol, t)]
