"""Layer 7, the budget guard: drawdown freeze and VaR, from the recorded equity.

Every few market minutes it reads the portfolio equity of the last ``risk.drawdown_window``
(7 days): a drawdown of ``freeze_drawdown`` (8%) or more sets ``deploys_frozen`` (no promotion,
no new shadow) until the drawdown recovers below ``unfreeze_drawdown`` or an operator runs
``methtrader unfreeze``. Each change is an audit row, an event and a notification. The 1-day
historical VaR(95%) of the portfolio is exported as ``portfolio_var_95`` once 20 days exist.

The pre-trade checks (kill switch, caps, order rate, daily loss) run in the trading engine, on
every order; their rules live in :mod:`appliance.risk`.
"""

from __future__ import annotations

from appliance.bus import DEPLOYS_FROZEN
from appliance.context import ServiceContext
from appliance.ledger_store import equity_since
from appliance.logs import service_logger
from appliance.notify import Notifier
from appliance.risk import drawdown, freeze_decision, historical_var
from appliance.schedule import duration_s

NAME = "risk"
CHECK_EVERY_S = 300


def daily_returns(points: list[tuple[int, float]]) -> list[float]:
    """Close-to-close returns of the last equity point of each UTC day."""
    last: dict[int, float] = {}
    for ts, eq in points:
        last[ts // 86_400_000] = eq
    days = [last[d] for d in sorted(last)]
    return [b / a - 1.0 for a, b in zip(days, days[1:]) if a]


async def check(ctx: ServiceContext, notifier: Notifier) -> dict[str, float]:
    cfg = ctx.cfg.risk
    now_ms = int(ctx.clock.now() * 1000)
    window = await ctx.store.run(equity_since, ctx.store.store,
                                 now_ms - int(duration_s(cfg.drawdown_window) * 1000))
    figures: dict[str, float] = {}
    if window:
        values = [e for _, e in window]
        dd = drawdown(values)
        figures["drawdown"] = dd
        ctx.metrics.portfolio_drawdown.set(dd)
        frozen = ctx.bus.switch(DEPLOYS_FROZEN)
        should = freeze_decision(values, frozen, freeze_at=cfg.freeze_drawdown,
                                 unfreeze_below=cfg.unfreeze_drawdown)
        if should != frozen:
            peak = max(values)
            current = (peak - values[-1]) / peak if peak else 0.0
            reason = (f"{cfg.drawdown_window} drawdown {current:.2%} "
                      + (f">= {cfg.freeze_drawdown:.0%}" if should else
                         f"recovered below {cfg.unfreeze_drawdown:.0%}"))
            ctx.bus.set_switch(DEPLOYS_FROZEN, should, actor=NAME, reason=reason, source=NAME)
            notifier.notify("deploys_frozen" if should else "deploys_unfrozen", reason,
                            {"drawdown": current})
            service_logger(NAME).warning("deploys frozen" if should else "deploys unfrozen",
                                         reason=reason)
    history = await ctx.store.run(equity_since, ctx.store.store, now_ms - 120 * 86_400_000)
    rets = daily_returns(history)
    if len(rets) >= 20:
        var = historical_var(rets, 0.95)
        figures["var_95"] = var
        ctx.metrics.portfolio_var_95.set(var)
        if cfg.var_limit and var > cfg.var_limit:
            notifier.notify("var_limit", f"1-day VaR(95%) {var:.2%} above the limit "
                            f"{cfg.var_limit:.2%}", {"var_95": var}, key="var_95")
    return figures


async def run(ctx: ServiceContext, notifier: Notifier) -> None:
    while True:
        ctx.beat(NAME)
        await check(ctx, notifier)
        await ctx.clock.sleep(CHECK_EVERY_S)
