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
* Lifecycle: each symbol has a launch day; a couple are delisted and relisted periodically, so
  discovery sees listings and delistings over time.
* Costs of trading it: a constant half spread per symbol (:func:`half_spread`, 0.5 bp for BTC up
  to 10 bp for the thinnest), which the tickers quote as bid/ask around the last close and the
  paper venue charges on every fill; and a funding rate every 8 hours (:meth:`SimMarket
  .funding_rate`), mostly positive around 0.01%, some negative, a pure function of
  ``(seed, symbol, funding time)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from scipy.signal import lfilter

from appliance.domain import Candle, Instrument, Ticker
from appliance.exchange.base import quote_around
from appliance.exchange.simshock import Shock
from models.funding import FUNDING_PERIOD_MS, funding_times

MINUTE_MS = 60_000
DAY_MS = 86_400_000
MINUTES_PER_DAY = 1440
EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: the market's first day
TREND_SHARE = 0.10  # drift std as a share of a minute's volatility
TREND_MINUTES = 360.0  # the drift's memory


@dataclass(frozen=True)
class SimSymbol:
    symbol: str
    price: float  # opening price on the epoch day
    turnover_usd: float  # typical 24h turnover
    daily_vol: float  # typical daily return volatility
    beta: float  # loading on the common factor
    tick: str
    qty_step: str
    launch_day: int = 0  # days after EPOCH
    cycle_days: int = 0  # > 0: listed for cycle_days, then closed for cycle_days / 3, repeating


UNIVERSE: tuple[SimSymbol, ...] = (
    SimSymbol("BTCUSDT", 42_000, 4.5e9, 0.030, 1.0, "0.10", "0.001"),
    SimSymbol("ETHUSDT", 2_300, 2.2e9, 0.038, 1.1, "0.01", "0.01"),
    SimSymbol("SOLUSDT", 100, 9.0e8, 0.055, 1.3, "0.010", "0.1"),
    SimSymbol("XRPUSDT", 0.62, 5.0e8, 0.045, 1.1, "0.0001", "1"),
    SimSymbol("DOGEUSDT", 0.09, 4.2e8, 0.060, 1.3, "0.00001", "1"),
    SimSymbol("ADAUSDT", 0.58, 1.6e8, 0.050, 1.1, "0.0001", "1"),
    SimSymbol("AVAXUSDT", 38, 1.4e8, 0.060, 1.3, "0.001", "0.1"),
    SimSymbol("LINKUSDT", 15, 1.2e8, 0.055, 1.2, "0.001", "0.1"),
    SimSymbol("DOTUSDT", 8, 6.0e7, 0.050, 1.1, "0.001", "0.1"),
    SimSymbol("LTCUSDT", 72, 5.5e7, 0.040, 1.0, "0.01", "0.1"),
    SimSymbol("BCHUSDT", 250, 5.0e7, 0.045, 1.0, "0.05", "0.01"),
    SimSymbol("TRXUSDT", 0.105, 3.0e7, 0.030, 0.7, "0.00001", "1"),
    SimSymbol("NEARUSDT", 3.5, 4.5e7, 0.065, 1.3, "0.001", "0.1"),
    SimSymbol("ATOMUSDT", 10, 3.0e7, 0.055, 1.1, "0.001", "0.1"),
    SimSymbol("APTUSDT", 9, 3.5e7, 0.065, 1.3, "0.0001", "0.01"),
    SimSymbol("ARBUSDT", 1.5, 4.0e7, 0.065, 1.3, "0.0001", "0.1"),
    SimSymbol("OPUSDT", 3.2, 3.2e7, 0.065, 1.3, "0.0001", "0.1"),
    SimSymbol("SUIUSDT", 0.8, 6.0e7, 0.075, 1.4, "0.0001", "10", launch_day=90),
    SimSymbol("FILUSDT", 5.5, 1.4e7, 0.055, 1.1, "0.001", "0.1"),
    SimSymbol("INJUSDT", 30, 1.2e7, 0.075, 1.4, "0.001", "0.1"),
    SimSymbol("ETCUSDT", 20, 9.0e6, 0.045, 1.0, "0.001", "0.1"),
    SimSymbol("XLMUSDT", 0.12, 6.0e6, 0.040, 0.9, "0.00001", "1"),
    SimSymbol("SEIUSDT", 0.5, 4.0e6, 0.080, 1.4, "0.0001", "1", cycle_days=45),
    SimSymbol("TIAUSDT", 12, 3.0e6, 0.080, 1.4, "0.001", "0.1", launch_day=200,
              cycle_days=60),
)

_INDEX = {s.symbol: i for i, s in enumerate(UNIVERSE)}

# The half spread falls with liquidity as a power law through two anchors: 0.5 bp at BTC's
# turnover and 10 bp at the thinnest symbol's.
_SPREAD_HI_TURNOVER, _SPREAD_LO = 4.5e9, 0.5e-4
_SPREAD_LO_TURNOVER, _SPREAD_HI = 3.0e6, 10e-4
_SPREAD_POWER = math.log(_SPREAD_HI / _SPREAD_LO) / math.log(_SPREAD_HI_TURNOVER
                                                             / _SPREAD_LO_TURNOVER)
FUNDING_MEAN = 1e-4  # 0.01% per 8 h, Bybit's usual rate
FUNDING_CAP = 0.005  # Bybit's upper/lowerFundingRate on the fake's instruments


def symbol_spec(symbol: str) -> SimSymbol:
    try:
        return UNIVERSE[_INDEX[symbol]]
    except KeyError:
        raise KeyError(f"unknown sim symbol {symbol!r}") from None


def half_spread(symbol: str) -> float:
    """The sim's half spread of ``symbol`` as a fraction of the price (constant in time)."""
    turnover = symbol_spec(symbol).turnover_usd
    h = _SPREAD_LO * (_SPREAD_HI_TURNOVER / turnover) ** _SPREAD_POWER
    return round(min(_SPREAD_HI, max(_SPREAD_LO, h)), 8)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def _tod_profile() -> np.ndarray:
    m = np.arange(MINUTES_PER_DAY)
    # busier around 00:00, 08:00 and 13:30-16:00 UTC; normalised to mean square 1
    prof = (1.0 + 0.35 * np.cos(2 * np.pi * m / MINUTES_PER_DAY)
            + 0.25 * np.exp(-((m - 870) / 120.0) ** 2) + 0.15 * np.exp(-((m - 480) / 90.0) ** 2))
    return prof / np.sqrt(np.mean(prof ** 2))


_TOD = _tod_profile()


class SimMarket:
    """The synthetic market. Thread-safe for reads (caches are per instance, pure data)."""

    def __init__(self, seed: int = 7, delistings: dict[str, int] | None = None,
                 trend_share: float = TREND_SHARE, shock: Shock | None = None) -> None:
        """``delistings`` plants a delisting: symbol → the moment (ms) it settles and closes;
        the venue announces it (``delivery_time``) a day before (``sim.delist``).
        ``trend_share`` sizes the learnable drift (``sim.trend_share``): 0 is a market with no
        edge to find beyond the daily regimes, larger values are easier markets. ``shock``
        plants a regime break (:mod:`appliance.exchange.simshock`, ``sim.shock_at``)."""
        self.seed = int(seed)
        self.shock = shock
        self.trend_share = float(trend_share)
        self.delistings = dict(delistings or {})
        self._day_cache: dict[int, np.ndarray] = {}
        self._levels = np.zeros((0, len(UNIVERSE)))  # opening log-price per day
        self._day_sigma = np.zeros((0, len(UNIVERSE)))
        self._activity = np.zeros((0, len(UNIVERSE)))

    # -- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def symbols() -> list[str]:
        return [s.symbol for s in UNIVERSE]

    def listed(self, symbol: str, t_ms: int) -> bool:
        spec = symbol_spec(symbol)
        if symbol in self.delistings and t_ms >= self.delistings[symbol]:
            return False
        day = (t_ms - EPOCH_MS) // DAY_MS
        if day < spec.launch_day:
            return False
        if spec.cycle_days:
            period = spec.cycle_days + max(1, spec.cycle_days // 3)
            return (day - spec.launch_day) % period < spec.cycle_days
        return True

    def instruments(self, t_ms: int) -> list[Instrument]:
        out = []
        for s in UNIVERSE:
            if (t_ms - EPOCH_MS) // DAY_MS < s.launch_day:
                continue  # not announced yet
            out.append(Instrument(
                symbol=s.symbol, status="Trading" if self.listed(s.symbol, t_ms) else "Closed",
                base_coin=s.symbol[:-4], quote_coin="USDT", tick_size=Decimal(s.tick),
                qty_step=Decimal(s.qty_step), min_order_qty=Decimal(s.qty_step),
                launch_time=EPOCH_MS + s.launch_day * DAY_MS,
                delivery_time=self.delivery_time(s.symbol, t_ms)))
        return out

    def delivery_time(self, symbol: str, t_ms: int) -> int:
        """When an announced delisting settles (0 when none is announced at ``t_ms``)."""
        at = self.delistings.get(symbol)
        return at if at is not None and t_ms >= at - DAY_MS else 0

    # -- day level ---------------------------------------------------------------------------

    def _extend_days(self, upto: int) -> None:
        """Compute day-level state for days [0, upto] (cumulative from the epoch)."""
        have = self._levels.shape[0]
        if upto < have:
            return
        n_sym = len(UNIVERSE)
        levels = np.empty((upto + 1, n_sym))
        sigma = np.empty((upto + 1, n_sym))
        activity = np.empty((upto + 1, n_sym))
        levels[:have], sigma[:have], activity[:have] = (
            self._levels, self._day_sigma, self._activity)
        base_vol = np.array([s.daily_vol for s in UNIVERSE])
        betas = np.array([s.beta for s in UNIVERSE])
        if have == 0:
            levels[0] = np.log([s.price for s in UNIVERSE])
            sigma[0] = base_vol
            activity[0] = 0.0
            start = 1
        else:
            start = have
        for d in range(start, upto + 1):
            rng = _rng(self.seed, 1_000_003, d)
            shock_f, shock_i = rng.standard_t(5, 2 * n_sym).reshape(2, n_sym) / math.sqrt(5 / 3)
            prev_sigma = sigma[d - 1]
            # previous day's return drives today's vol (GARCH(1,1)-like in relative terms)
            prev_ret = levels[d - 1] - (levels[d - 2] if d >= 2 else levels[d - 1])
            var = (0.05 * base_vol ** 2 + 0.10 * prev_ret ** 2 + 0.85 * prev_sigma ** 2)
            sigma[d] = np.clip(np.sqrt(var), 0.3 * base_vol, 4 * base_vol)
            factor = shock_f[0] * 0.6
            ret = sigma[d] * (betas / betas.max() * factor + np.sqrt(0.64) * shock_i)
            ret = np.clip(ret, -0.35, 0.35) - 0.5 * sigma[d] ** 2 * 0.1
            levels[d] = levels[d - 1] + ret
            activity[d] = 0.7 * activity[d - 1] + 0.3 * rng.normal(0, 0.6, n_sym)
        self._levels, self._day_sigma, self._activity = levels, sigma, activity

    # -- minute level ------------------------------------------------------------------------

    def _day(self, day: int) -> np.ndarray:
        """Array (n_symbols, 1440, 6): open, high, low, close, volume, turnover for one day."""
        cached = self._day_cache.get(day)
        if cached is not None:
            return cached
        if day < 0:
            raise ValueError("the sim market starts on 2024-01-01")
        self._extend_days(day + 1)
        n_sym, n = len(UNIVERSE), MINUTES_PER_DAY
        rng = _rng(self.seed, 2_000_003, day)
        betas = np.array([s.beta for s in UNIVERSE])[:, None]
        base_turn = np.array([s.turnover_usd for s in UNIVERSE])[:, None]
        f = rng.standard_t(4, n) / math.sqrt(2.0)
        z = rng.standard_t(4, (n_sym, n)) / math.sqrt(2.0)
        # stochastic volatility: log-vol AR(1), mean-reverting within the day
        h = lfilter([0.08], [1.0, -0.985], rng.normal(0, 1, (n_sym, n)), axis=1)
        vol = np.exp(h - 0.5 * np.var(h, axis=1, keepdims=True)) * _TOD
        raw = (0.6 * f[None, :] * (betas / betas.max()) + 0.8 * z) * vol
        # regime: momentum (phi > 0) or mean reversion (phi < 0) for this symbol and day
        phi = rng.choice([-0.12, 0.0, 0.12], size=n_sym, p=[0.3, 0.3, 0.4])
        for i in range(n_sym):
            raw[i] = lfilter([1.0], [1.0, -phi[i]], raw[i])
        raw /= np.sqrt(np.mean(raw ** 2, axis=1, keepdims=True))
        sig = self._day_sigma[day][:, None] / math.sqrt(n)
        r = (raw + self.trend_share * self._trend(day, n_sym, n)) * sig
        target = (self._levels[day + 1] - self._levels[day])[:, None]
        r += (target - r.sum(axis=1, keepdims=True)) / n  # bridge to the day's close
        logp = self._levels[day][:, None] + np.concatenate(
            [np.zeros((n_sym, 1)), np.cumsum(r, axis=1)], axis=1)
        prices = np.exp(logp)
        opens, closes = prices[:, :-1], prices[:, 1:]
        wick = np.abs(rng.normal(0, 1, (2, n_sym, n))) * sig * 0.8
        highs = np.maximum(opens, closes) * np.exp(wick[0])
        lows = np.minimum(opens, closes) * np.exp(-wick[1])
        ticks = np.array([float(s.tick) for s in UNIVERSE])[:, None]
        opens, closes = np.round(opens / ticks) * ticks, np.round(closes / ticks) * ticks
        highs = np.maximum(np.ceil(highs / ticks) * ticks, np.maximum(opens, closes))
        lows = np.minimum(np.floor(lows / ticks) * ticks, np.minimum(opens, closes))
        act = np.exp(self._activity[day])[:, None]
        intensity = (0.4 + np.abs(r) / sig) * _TOD * act
        turnover = base_turn / n * intensity / np.mean(intensity, axis=1, keepdims=True) * act
        turnover *= np.exp(rng.normal(0, 0.25, (n_sym, n)))
        volume = turnover / closes
        out = np.stack([opens, highs, lows, closes, volume, turnover], axis=-1)
        out.setflags(write=False)
        if len(self._day_cache) > 64:
            self._day_cache.pop(next(iter(self._day_cache)))
        self._day_cache[day] = out
        return out

    def _trend(self, day: int, n_sym: int, n: int) -> np.ndarray:
        """A slow drift per symbol (AR(1), ~3 h memory, unit stationary std): hours-long
        trends that recent returns reveal and that outlast a round trip's fees — the
        learnable structure a model can find after costs."""
        rng = _rng(self.seed, 3_000_017, day)
        a = math.exp(-1.0 / TREND_MINUTES)
        noise = rng.normal(0, math.sqrt(1 - a * a), (n_sym, n))
        start = rng.normal(0, 1, (n_sym, 1))
        return lfilter([1.0], [1.0, -a], noise, axis=1, zi=a * start)[0]

    def candles(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        """1m candles with open_time in [start_ms, end_ms), oldest first, as an (n, 7) array
        of open_time, open, high, low, close, volume, turnover. Minutes when the symbol was not
        listed are absent."""
        idx = _INDEX.get(symbol)
        if idx is None:
            raise KeyError(f"unknown sim symbol {symbol!r}")
        end_ms = min(end_ms, self.delistings.get(symbol, end_ms))
        start = max(start_ms - start_ms % MINUTE_MS, EPOCH_MS)
        if start % MINUTE_MS:
            start += MINUTE_MS - start % MINUTE_MS
        if end_ms <= start:
            return np.zeros((0, 7))
        parts = []
        d0, d1 = (start - EPOCH_MS) // DAY_MS, (end_ms - 1 - EPOCH_MS) // DAY_MS
        for day in range(d0, d1 + 1):
            day_start = EPOCH_MS + day * DAY_MS
            if not self.listed(symbol, day_start):
                continue
            lo = max(0, (start - day_start) // MINUTE_MS)
            hi = min(MINUTES_PER_DAY, -(-(end_ms - day_start) // MINUTE_MS))
            if hi <= lo:
                continue
            block = self._day(day)[idx, lo:hi]
            times = day_start + np.arange(lo, hi, dtype=np.int64) * MINUTE_MS
            parts.append(np.column_stack([times.astype(np.float64), block]))
        if not parts:
            return np.zeros((0, 7))
        out = np.concatenate(parts)
        if self.shock is not None:
            out = self.shock.apply(symbol, out, float(UNIVERSE[idx].tick), self._open_at)
        return out

    def _open_at(self, symbol: str, t_ms: int) -> float:
        """The unshocked open of the minute at ``t_ms`` (listed or not)."""
        day, minute = divmod((t_ms - EPOCH_MS) // MINUTE_MS, MINUTES_PER_DAY)
        return float(self._day(int(day))[_INDEX[symbol], int(minute), 0])

    def candle_records(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        arr = self.candles(symbol, start_ms, end_ms)
        return [Candle(symbol, "1m", int(row[0]), *map(float, row[1:])) for row in arr]

    def last_price(self, symbol: str, t_ms: int) -> float | None:
        """Close of the last minute that closed at or before ``t_ms`` (the last few minutes
        are looked at first: a fill asks this, and two days of candles per fill was most of a
        bar's time in ``bench trading``)."""
        end = t_ms - t_ms % MINUTE_MS
        arr = self.candles(symbol, end - 10 * MINUTE_MS, end)
        if not len(arr):
            arr = self.candles(symbol, end - 2 * DAY_MS, end)
        return float(arr[-1, 4]) if len(arr) else None

    def quote(self, symbol: str, last: float) -> tuple[float, float]:
        """Bid and ask around ``last``: :func:`half_spread` each way, widened to the tick."""
        return quote_around(last, half_spread(symbol), Decimal(symbol_spec(symbol).tick))

    def tickers(self, t_ms: int) -> list[Ticker]:
        out = []
        end = t_ms - t_ms % MINUTE_MS
        for s in UNIVERSE:
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

    def funding_rate(self, symbol: str, t_ms: int) -> float:
        """The rate settled at funding time ``t_ms``: a per-(symbol, day) level around
        :data:`FUNDING_MEAN` plus noise per funding time, capped at ±:data:`FUNDING_CAP` and
        rounded to 1e-8 as Bybit quotes it. About one rate in seven is negative."""
        idx = _INDEX.get(symbol)
        if idx is None:
            raise KeyError(f"unknown sim symbol {symbol!r}")
        day = (t_ms - EPOCH_MS) // DAY_MS
        level = _rng(self.seed, 4_000_037, idx, day).normal()
        noise = _rng(self.seed, 4_000_039, idx, t_ms // FUNDING_PERIOD_MS).normal()
        rate = FUNDING_MEAN * (1.0 + 0.8 * level + 0.5 * noise)
        return round(min(FUNDING_CAP, max(-FUNDING_CAP, rate)), 8)

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
        """(time, rate) at the funding times in ``(start_ms, end_ms]`` while ``symbol`` was
        listed, oldest first."""
        symbol_spec(symbol)
        return [(t, self.funding_rate(symbol, t))
                for t in funding_times(max(start_ms, EPOCH_MS - 1), end_ms)
                if self.listed(symbol, t)]
