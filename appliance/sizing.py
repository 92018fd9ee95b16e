"""Pure position sizing: model probabilities → target fraction → target quantity → one order.

No clock, no I/O: the trading and shadow services pass in what they measured. Orders, fills
and positions are ``Decimal``, so that they add up exactly; the model side (probabilities,
volatility, the fraction) is float, as the models produce it, and so is the engine's sizing of
a bar's symbols (:func:`target_lots`: whole lots in float64, one vectorised step), which turns
into Decimal only for the orders it sends.
"""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Sequence

import numpy as np

from appliance.domain import Side


def target_fraction(probs: Sequence[float], vol: float, *, threshold: float = 0.1,
                    vol_target: float = 0.01, max_fraction: float = 0.25) -> float:
    """Signed fraction of equity to hold, from (p_short, p_flat, p_long) and per-bar volatility.

    Why this shape:

    * Confidence sizing: the score ``p_long - p_short`` says which way and how sure the model is.
      Inside ``±threshold`` the model is not sure enough to pay fees, so the book stays flat; past
      it the size grows linearly from 0 (at the threshold) to full (at a score of ±1), so a weak
      signal never jumps straight to a full position.
    * Inverse volatility: full confidence aims at a per-bar risk of ``vol_target``, so the same
      signal holds less of a wild market than of a calm one.
    * Capped: ``max_fraction`` bounds any single position however calm the market looks (a
      near-zero volatility estimate must not turn into a huge position).

    Without a usable volatility (NaN, zero, negative) or with NaN probabilities there is no basis
    for a size, and the answer is flat (0.0), never a division by zero. One row of
    :func:`target_fractions`, which the trading engine and the validation backtest both use.
    """
    if len(probs) != 3:
        raise ValueError(f"expected (p_short, p_flat, p_long), got {len(probs)} probabilities")
    return float(target_fractions(np.asarray([probs], dtype=np.float64),
                                  np.asarray([vol], dtype=np.float64), threshold=threshold,
                                  vol_target=vol_target, max_fraction=max_fraction)[0])


def target_fractions(probs: np.ndarray, vol: np.ndarray, *, threshold: float = 0.1,
                     vol_target: float = 0.01, max_fraction: float = 0.25) -> np.ndarray:
    """:func:`target_fraction` for many rows at once: ``probs`` (n, 3), ``vol`` (n,)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    p = np.asarray(probs, dtype=np.float64)
    v = np.asarray(vol, dtype=np.float64)
    score = p[:, 2] - p[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        confidence = (np.minimum(np.abs(score), 1.0) - threshold) / (1.0 - threshold)
        size = np.minimum(max_fraction, confidence * vol_target / v)
    usable = (np.isfinite(score) & (np.abs(score) > threshold) & np.isfinite(v) & (v > 0.0)
              & (size > 0.0))
    return np.where(usable, np.copysign(np.where(usable, size, 0.0), score), 0.0)


def target_qty(fraction: float, equity: Decimal, price: Decimal) -> Decimal:
    """Signed, unrounded base quantity worth ``fraction`` of ``equity`` at ``price``.

    Rounding to the lot is left to :func:`order_for`, which rounds the difference actually
    traded (rounding the target here and again there would round twice).
    """
    if not math.isfinite(fraction):
        raise ValueError(f"fraction must be finite, got {fraction}")
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    return Decimal(str(fraction)) * equity / price


def target_lots(fractions: np.ndarray, equity: float, prices: np.ndarray, steps: np.ndarray
                ) -> np.ndarray:
    """Whole lots (signed, toward zero) worth ``fractions`` of ``equity`` at ``prices``, for
    many symbols at once in float64; NaN where there is no price or lot (no order).

    The engine sizes every symbol of a bar this way and turns only the orders that change a
    position into Decimal (``Decimal(lots) * step``, exact). It is
    ``round_qty(target_qty(f, equity, price), step) / step`` in float64: the two agree except
    where ``f·equity/(price·step)`` lies within float64's rounding (~1e-15 relative) of a whole
    lot, where this may differ by that one lot; a test holds them to that."""
    f = np.asarray(fractions, dtype=np.float64)
    p = np.asarray(prices, dtype=np.float64)
    st = np.asarray(steps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lots = np.trunc(f * equity / (p * st))
    usable = np.isfinite(lots) & (p > 0) & (st > 0)
    return np.where(usable, lots, np.nan)


def lots_change(target: np.ndarray, held: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Where the ``target`` lots (:func:`target_lots`) differ from what is ``held`` (base
    quantity): the symbols that may need an order (:func:`order_for` decides, in Decimal).
    A held quantity within a millionth of a lot of the target needs none (held quantities are
    whole lots; Decimal rounds such a remainder away too)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(target) & ~(np.abs(target - held / steps) < 1e-6)


def round_qty(qty: Decimal, step: Decimal) -> Decimal:
    """Round ``qty`` toward zero to a whole multiple of the lot ``step`` (0.0127/0.001 → 0.012).

    Toward zero, so rounding never buys or sells more than was asked (never adds risk).
    """
    if step <= 0:
        raise ValueError(f"lot step must be positive, got {step}")
    lots = (qty / step).to_integral_value(rounding=ROUND_DOWN)
    return Decimal(0) * step if lots == 0 else lots * step  # no "-0.000"


def round_price(price: Decimal, tick: Decimal) -> Decimal:
    """Round ``price`` to the nearest multiple of ``tick``, halves up (as the paper broker does)."""
    if tick <= 0:
        raise ValueError(f"tick size must be positive, got {tick}")
    return (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick


def order_for(current: Decimal, target: Decimal, *, step: Decimal | None,
              min_qty: Decimal) -> tuple[Side, Decimal, bool] | None:
    """The one order that moves the signed position ``current`` to ``target``, or None.

    Returns (side, positive qty, reduce_only). ``reduce_only`` is True exactly when the order
    only shrinks the position toward flat (never past it): such orders must still pass when the
    kill switch or the loss limit allows nothing else. A flip (long → short or back) is one
    order, not reduce-only: half of it opens new risk.

    With a lot ``step`` (real and paper-exchange orders) the difference is rounded toward zero to
    the step, and an order smaller than ``min_qty`` (or rounded to nothing) is dropped. With
    ``step=None`` (shadow positions: paper measurements of a model, not exchange orders) the
    exchange's lot rules do not apply: the raw difference is traded and ``min_qty`` is ignored,
    so only a zero difference gives None.
    """
    diff = target - current
    if step is not None:
        diff = round_qty(diff, step)
        if abs(diff) < min_qty:
            return None
    if diff == 0:
        return None
    side = Side.BUY if diff > 0 else Side.SELL
    reduce_only = current != 0 and (diff > 0) != (current > 0) and abs(diff) <= abs(current)
    return side, abs(diff), reduce_only
