"""The symbols of the sim market: 24 hand-written ones, then generated ones up to ``sim.pairs``.

The first :data:`HAND_WRITTEN` symbols are the quick start's universe (real names, fixed specs).
Beyond them, symbol ``i`` is drawn from ``(seed, i)`` alone, so a universe of 200 begins with the
universe of 150: a symbol's spec, and so its candles, do not depend on how many others there are.

Generated symbols make the tail of a Bybit-like market:

* names of the shape consonant-vowel-consonant-vowel-``X`` (``KAROX``, ``MIVEX``), unique and
  never one of the hand-written (real) names;
* 24h turnover log-normal around ~$7M (10**6.85, a factor 3.5 either way for one standard
  deviation), so ~39% of them trade above the $10M tradable bar; with the liquid hand-written
  ones that is 40-50% of the symbols listed at a time, from 150 pairs (~65 above the bar) to
  400 (~150);
* the price log-uniform from $0.00003 to $500, the tick ~1e-4 of it (4-5 significant digits),
  the qty step worth $1-$10, a daily volatility that rises as turnover falls, a beta in
  [0.8, 1.3];
* listings spread over time: 40% trade from the epoch, the rest launch on a day spread evenly
  up to :data:`LAUNCH_SPAN_DAYS` (2027-01-05; later, only relistings); 8% pause and relist
  periodically (``cycle_days``) and 5% are delisted for good some months after launch
  (``delist_day``, announced a day before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_PAIRS = 400
LAUNCH_SPAN_DAYS = 1100  # generated launches spread over the epoch's first 3 years
TURNOVER_LOG10_MEAN, TURNOVER_LOG10_STD = 6.85, 0.55
BETA_MAX = 1.4  # the common factor's loading is scaled by this (the hand-written maximum)

_CONSONANTS = "BDFGKLMNPRSTVZ"
_VOWELS = "AEIOU"


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
    delist_day: int = 0  # > 0: closed for good from this day (announced the day before)


HAND_WRITTEN: tuple[SimSymbol, ...] = (
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

# The half spread falls with liquidity as a power law through two anchors: 0.5 bp at BTC's
# turnover and 10 bp at the thinnest hand-written symbol's; the generated tail is capped at 10 bp.
_SPREAD_HI_TURNOVER, _SPREAD_LO = 4.5e9, 0.5e-4
_SPREAD_LO_TURNOVER, _SPREAD_HI = 3.0e6, 10e-4
_SPREAD_POWER = math.log(_SPREAD_HI / _SPREAD_LO) / math.log(_SPREAD_HI_TURNOVER
                                                             / _SPREAD_LO_TURNOVER)


def spread_of(spec: SimSymbol) -> float:
    """The half spread of ``spec`` as a fraction of the price (constant in time)."""
    h = _SPREAD_LO * (_SPREAD_HI_TURNOVER / spec.turnover_usd) ** _SPREAD_POWER
    return round(min(_SPREAD_HI, max(_SPREAD_LO, h)), 8)


def _power_of_ten(exponent: int) -> str:
    """``10**exponent`` as a plain decimal string ("0.001", "1", "100")."""
    return str(10 ** exponent) if exponent >= 0 else "0." + "0" * (-exponent - 1) + "1"


def _generated(seed: int, index: int, taken: set[str]) -> SimSymbol:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 5_000_011, index])))
    while True:
        c = rng.integers(0, len(_CONSONANTS), 2)
        v = rng.integers(0, len(_VOWELS), 2)
        name = f"{_CONSONANTS[c[0]]}{_VOWELS[v[0]]}{_CONSONANTS[c[1]]}{_VOWELS[v[1]]}XUSDT"
        if name not in taken:
            break
    log_turnover = min(8.7, max(5.3, rng.normal(TURNOVER_LOG10_MEAN, TURNOVER_LOG10_STD)))
    price = float(f"{10 ** rng.uniform(-4.5, 2.7):.3g}")
    magnitude = math.floor(math.log10(price))
    vol = 0.05 + 0.012 * (7.5 - log_turnover) + rng.normal(0, 0.008)
    launch, cycle, delist = 0, 0, 0
    if rng.random() >= 0.4:
        launch = int(rng.integers(1, LAUNCH_SPAN_DAYS))
    fate = rng.random()
    if fate < 0.08:
        cycle = int(rng.integers(30, 121))
    elif fate < 0.13:
        delist = launch + int(rng.integers(60, 700))
    return SimSymbol(
        name, price, round(10 ** log_turnover, -3), round(min(0.12, max(0.035, vol)), 4),
        round(float(rng.uniform(0.8, 1.3)), 2), _power_of_ten(magnitude - 4),
        _power_of_ten(math.ceil(math.log10(1 / price))), launch_day=launch, cycle_days=cycle,
        delist_day=delist)


def build_universe(seed: int, pairs: int = len(HAND_WRITTEN)) -> tuple[SimSymbol, ...]:
    """The first ``pairs`` symbols of seed ``seed``'s universe (1..:data:`MAX_PAIRS`)."""
    if not 1 <= pairs <= MAX_PAIRS:
        raise ValueError(f"sim pairs must be in [1, {MAX_PAIRS}], not {pairs}")
    out = list(HAND_WRITTEN[:pairs])
    taken = {s.symbol for s in HAND_WRITTEN}
    for index in range(len(HAND_WRITTEN), pairs):
        spec = _generated(seed, index, taken)
        taken.add(spec.symbol)
        out.append(spec)
    return tuple(out)
