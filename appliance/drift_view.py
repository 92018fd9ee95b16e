"""The ``drift`` snapshot (:mod:`appliance.services.drift`) for people: ``methtrader drift``
and the TUI read it through these functions (pure: snapshot in, rows and text out)."""

from __future__ import annotations

import time
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"


class NoDrift(LookupError):
    """There is nothing to show: no snapshot yet, or not the symbols asked for."""


def select(snapshot: dict[str, Any] | None, symbols: list[str]) -> dict[str, Any]:
    """The snapshot cut to ``symbols`` (all when empty); :class:`NoDrift` saying why when
    there is nothing."""
    if not snapshot or not snapshot.get("symbols"):
        raise NoDrift("no drift figures yet: the drift service publishes them once `methtrader "
                      "run` has a model with a drift reference (its first pass follows at once)")
    known = snapshot["symbols"]
    wanted = [s.upper() for s in symbols]
    missing = [s for s in wanted if s not in known]
    if missing:
        raise NoDrift(f"no drift figures for {', '.join(missing)}; symbols with figures: "
                      f"{', '.join(sorted(known))}")
    return {**snapshot, "symbols": {s: known[s] for s in (wanted or sorted(known))}}


def sparkline(values: list[float], line: float | None = None, width: int = 24) -> str:
    """A sparkline of ``values`` (the newest last), scaled with the 3σ line in range."""
    values = [v for v in values if v == v][-width:]
    if not values:
        return ""
    lo = min(values)
    hi = max(values + ([line] if line is not None else []))
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * len(SPARK)))]
                   for v in values)


def _num(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def format_drift(view: dict[str, Any], detail: bool) -> str:
    """The text of ``methtrader drift``: a line per symbol, with every feature's KL when
    ``detail`` (symbols were named)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(view["ts"]))
    persist = int(view.get("persist") or 1)
    lines = [f"drift at {when} UTC market time: KL of the live window "
             f"({view['window_s'] / 86400:g} d) vs the serving model's training reference; "
             f"drift above the {view['sigma']:g}σ line of the symbol's history"
             + (f" for {persist} passes in a row" if persist > 1 else ""),
             f"{'symbol':<12} {'verdict':<8} {'KL':>7} {'3σ line':>8} {'z':>6} {'points':>6}  "
             f"{'tf':<3} {'model':<34} history"]
    for symbol, s in view["symbols"].items():
        history = [p[1] for p in s.get("history") or []]
        verdict = s["verdict"]
        if verdict == "ok" and s.get("above"):  # above the line, not yet for long enough
            verdict = f"ok {s['above']}/{persist}"
        lines.append(f"{symbol:<12} {verdict:<8} {_num(s['kl']):>7} {_num(s['line']):>8} "
                     f"{_num(s['zscore'], 1):>6} {s['points']:>6}  {s['timeframe']:<3} "
                     f"{s['model_id']:<34} {sparkline(history, s['line'])}")
        if s.get("vol_ratio") is not None:
            lines.append(f"    seasonal volatility ×{s['vol_ratio']:.2f} of its profile "
                         f"({s.get('vol_regime') or 'normal'} regime)")
        if detail:
            for f, kl in sorted(s["features"].items(), key=lambda kv: -kv[1]):
                mark = "  ← moved most" if s["verdict"] == "drift" and f in s["moved"] else ""
                lines.append(f"    {f:<14} {kl:8.4f}{mark}")
        else:
            lines.append(f"    largest: {', '.join(s['moved'])}")
        retrain = s.get("last_retrain")
        if retrain:
            at = time.strftime("%Y-%m-%d %H:%M", time.gmtime(retrain["ts"]))
            lines.append(f"    early retrain {retrain['run_id'] or '(off)'} at {at}")
    return "\n".join(lines)
