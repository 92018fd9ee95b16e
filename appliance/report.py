"""``methtrader report MODEL_ID``: why a model holds its mode, on one page.

One model's record, read from DuckDB:

* the model (kind, group, symbols, timeframe, mode, pin) and every transition it went through
  (``model_transitions``: who moved it, when and why);
* its walk-forward folds and the score the lifecycle ranks it by (``metrics.folds``,
  ``wf_mean``, ``wf_std``, ``wf_score``; :mod:`models.validation`);
* its cost model per symbol (taker fee, slippage, half spread) and the symbols it does not
  trade because their spread turns its edge into a loss (``metrics.costs.excluded``);
* validation next to each of its books (shadow, prod), figure for figure. A book's figures
  follow :mod:`appliance.book_records`' rule (returns are the changes of its recorded equity
  from its capital, Sharpe annualised by the model's timeframe), so they match ``models``;
* each book's equity curve and drawdown, thinned to ``curve_points`` for the HTML plots.

While ``run`` holds the DuckDB file nobody else can open it, not even read-only, so
:func:`fetch_report` asks ``run`` for the report through the bus (the ``report`` command,
executed by the operator service in the store's thread); while it is down the file is opened
read-only here. Figures that cannot be computed are None, never NaN, so the report is JSON.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.book_records import book_returns
from appliance.contracts import Command
from appliance.ledger_store import book_equity
from appliance.paths import StatePaths
from appliance.store import Store
from data.intervals import periods_per_year
from models.metrics import max_drawdown, sharpe_ratio
from models.registry import RegistryError, get_model

COMMAND = Command.REPORT
TEXT_CURVE_POINTS = 0  # the text summary shows figures, not curves
HTML_CURVE_POINTS = 400
FIGURES = ("sharpe", "total_return", "max_drawdown", "trades", "fills", "bars", "days")


class UnknownModel(LookupError):
    """No model of that id in the registry (the message names it and says where to look)."""


def _clean(value: Any) -> Any:
    """Plain JSON data: non-finite floats become None, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def thin(n: int, keep: int, must: tuple[int, ...] = ()) -> list[int]:
    """At most about ``keep`` indices of ``range(n)``, evenly spread, always with the first,
    the last and ``must`` (the drawdown's trough, so a plot never hides it); 0 keeps none."""
    if keep <= 0 or n == 0:
        return []
    if n <= keep:
        return list(range(n))
    picked = set(np.linspace(0, n - 1, keep).round().astype(int).tolist())
    picked.update(i for i in must if 0 <= i < n)
    return sorted(picked)


def book_report(store: Store, book: dict[str, Any], timeframe: str,
                curve_points: int) -> dict[str, Any]:
    """One book's figures and (thinned) equity and drawdown curves; the curve starts at the
    book's capital when it opened."""
    capital = float(book["capital"])
    points = book_equity(store, book["book_id"])
    rets = book_returns(capital, points)
    ts = np.array([int(book["opened"])] + [t for t, _ in points], dtype=np.int64)
    eq = np.array([capital] + [e for _, e in points], dtype=np.float64)
    drawdown = 1.0 - eq / np.maximum.accumulate(eq) if capital > 0 else np.zeros(len(eq))
    keep = thin(len(eq), curve_points, (int(np.argmax(drawdown)),))
    last = int(ts[-1])
    return {
        "book_id": book["book_id"], "mode": book["mode"], "state": book["state"],
        "opened": int(book["opened"]), "closed": book["closed"], "capital": capital,
        "equity": float(eq[-1]),
        "figures": {
            "sharpe": sharpe_ratio(rets, periods_per_year(timeframe)) if len(rets) >= 2
            else None,
            "total_return": float(eq[-1] / capital - 1.0) if capital > 0 else None,
            "max_drawdown": max_drawdown(eq) if capital > 0 else None,
            "trades": int(book["trades"]), "fills": int(book["fills"]),
            "bars": len(points), "days": (last - int(book["opened"])) / 86_400_000},
        "curve": {"ts": ts[keep].tolist(), "equity": eq[keep].tolist(),
                  "drawdown": drawdown[keep].tolist()},
    }


def validation_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The validation record (the walk-forward test blocks chained) in the books' terms."""
    bars = metrics.get("bars")
    days = None
    folds = metrics.get("folds") or []
    if folds:
        days = sum((f["end"] - f["start"]) for f in folds) / 86_400_000
    return {"sharpe": metrics.get("sharpe"), "total_return": metrics.get("total_return"),
            "max_drawdown": metrics.get("max_drawdown"), "trades": metrics.get("trades"),
            "fills": metrics.get("fills"), "bars": bars, "days": days}


def build_report(store: Store, model_id: str, *, curve_points: int = TEXT_CURVE_POINTS,
                 now: float | None = None) -> dict[str, Any]:
    """The report of ``model_id`` (module docstring); :class:`UnknownModel` when there is none."""
    try:
        model = get_model(store, model_id)
    except RegistryError as exc:
        raise UnknownModel(str(exc)) from None
    metrics = model.get("metrics") or {}
    timeframe = model.get("timeframe") or metrics.get("timeframe") or "5m"
    transitions = store._dicts(
        "SELECT ts, from_mode, to_mode, actor, reason FROM model_transitions "
        "WHERE model_id = ? ORDER BY id", [model_id])
    books = [book_report(store, b, timeframe, curve_points) for b in store._dicts(
        "SELECT book_id, mode, state, opened, closed, capital, trades, fills FROM books "
        "WHERE model_id = ? ORDER BY opened, book_id", [model_id])]
    costs = metrics.get("costs") or {}
    return _clean({
        "model": {k: model.get(k) for k in ("model_id", "run_id", "parent_run_id", "group",
                                            "symbols", "kind", "mode", "mode_since", "pinned",
                                            "created", "feature_set", "dataset_sha256")}
        | {"timeframe": timeframe},
        "generated": time.time() if now is None else now,
        "transitions": transitions,
        "walk_forward": {"folds": metrics.get("folds") or [],
                         **{k: metrics.get(k) for k in ("wf_mean", "wf_std", "wf_score",
                                                         "psr")}},
        "costs": {"taker_fee": costs.get("taker_fee"), "slippage": costs.get("slippage"),
                  "symbols": [{"symbol": s, "half_spread": costs.get("half_spread", {}).get(s),
                               "excluded": (costs.get("excluded") or {}).get(s)}
                              for s in _symbols(model, costs)]},
        "validation": validation_figures(metrics),
        "books": books,
    })


def _symbols(model: dict[str, Any], costs: dict[str, Any]) -> list[str]:
    seen = list(model.get("symbols") or [])
    for s in [*(costs.get("half_spread") or {}), *(costs.get("excluded") or {})]:
        if s not in seen:
            seen.append(s)
    return seen


def side_by_side(report: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[Any]]]]:
    """(column titles, rows): validation, then each book, one row per figure."""
    columns = ["validation"] + [f"{b['mode']} {fmt_day(b['opened'] / 1000)}"
                                for b in report["books"]]
    values = [report["validation"]] + [b["figures"] for b in report["books"]]
    return columns, [(name, [v.get(name) for v in values]) for name in FIGURES]


def fmt_day(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d", time.gmtime(ts))


def fmt_when(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def fmt_figure(name: str, value: Any) -> str:
    if value is None:
        return "—"
    if name in ("total_return", "max_drawdown"):
        return f"{value * 100:.2f}%"
    if name in ("trades", "fills", "bars"):
        return str(int(value))
    if name == "days":
        return f"{value:.1f}"
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)
           ) -> list[str]:
    """Aligned plain-text columns: the ``left`` ones flush left, the others (figures) right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def render_text(report: dict[str, Any]) -> str:
    """The plain-text summary (the CLI without ``--html``, and the TUI's Models screen)."""
    m = report["model"]
    wf = report["walk_forward"]
    out = [f"model {m['model_id']}  {m['kind']}  group {m['group']}  timeframe "
           f"{m['timeframe']}  mode {m['mode']} since {fmt_when(m['mode_since'])}"
           + ("  (pinned)" if m.get("pinned") else ""),
           f"symbols {', '.join(m.get('symbols') or []) or '—'}   run {m.get('run_id')}", ""]
    out.append("transitions")
    out += [f"  {fmt_when(t['ts'])}  {t['from_mode'] or '—'} → {t['to_mode']}  by "
            f"{t['actor']}: {t['reason']}" for t in report["transitions"]] or ["  none"]
    out += ["", "validation vs live books"]
    columns, rows = side_by_side(report)
    out += ["  " + r for r in _table(["", *columns],
                                     [[n, *(fmt_figure(n, v) for v in vs)] for n, vs in rows])]
    if not report["books"]:
        out.append("  (no shadow or prod book yet: the model has not traded)")
    out += ["", f"walk-forward: score {fmt_figure('sharpe', wf.get('wf_score'))} = mean "
            f"{fmt_figure('sharpe', wf.get('wf_mean'))} - std "
            f"{fmt_figure('sharpe', wf.get('wf_std'))} / sqrt({len(wf['folds'])} folds)"]
    if wf["folds"]:
        out += ["  " + r for r in _table(
            ["fold", "start", "end", "sharpe", "return", "drawdown", "trades", "fills"],
            fold_rows(wf["folds"]))]
    else:
        out.append("  no folds recorded (a run from before walk-forward validation)")
    c = report["costs"]
    out += ["", f"costs: taker fee {fmt_bp(c['taker_fee'])}, slippage "
            f"{fmt_bp(c['slippage'])}"]
    out += ["  " + r for r in _table(["symbol", "half spread", "traded"], cost_rows(c),
                                     left=(0, 2))]
    return "\n".join(out)


def fmt_bp(value: float | None) -> str:
    return "—" if value is None else f"{value * 1e4:.2f} bp"


def fold_rows(folds: list[dict[str, Any]]) -> list[list[str]]:
    """The walk-forward table's rows, formatted: the text and the HTML report show the same."""
    return [[str(i + 1), fmt_day(f["start"] / 1000), fmt_day(f["end"] / 1000),
             fmt_figure("sharpe", f.get("sharpe")),
             fmt_figure("total_return", f.get("total_return")),
             fmt_figure("max_drawdown", f.get("max_drawdown")),
             fmt_figure("trades", f.get("trades")), fmt_figure("fills", f.get("fills"))]
            for i, f in enumerate(folds)]


def cost_rows(costs: dict[str, Any]) -> list[list[str]]:
    """The per-symbol cost table's rows (symbol, half spread, traded), formatted for both
    reports."""
    return [[s["symbol"], fmt_bp(s["half_spread"]),
             "yes" if not s["excluded"] else f"no: {s['excluded']}"] for s in costs["symbols"]]


# -- where the report comes from -------------------------------------------------------------

def _report_or_missing(store: Store, model_id: str, curve_points: int) -> dict[str, Any]:
    try:
        return {"found": True, "report": build_report(store, model_id,
                                                      curve_points=curve_points)}
    except UnknownModel as exc:
        return {"found": False, "missing": str(exc)}


async def report_command(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The ``report`` operator command, executed by ``run`` in the store's thread."""
    return await ctx.store.run(_report_or_missing, ctx.store.store, str(args["model_id"]),
                               int(args.get("curve_points", TEXT_CURVE_POINTS)))


def fetch_report(state_dir: Path, model_id: str, *, curve_points: int = TEXT_CURVE_POINTS,
                 deadline_s: float = 60.0) -> dict[str, Any]:
    """The report of ``model_id`` in ``state_dir``: asked of ``run`` through the bus while it
    holds DuckDB, else read from the file (read-only). :class:`UnknownModel` when absent;
    :class:`appliance.commands.CommandFailed` when ``run`` does not answer in time."""
    from appliance.bus import Bus
    from appliance.commands import send_and_wait
    from appliance.liveness import is_running

    paths = StatePaths(state_dir)
    if is_running(state_dir):
        with Bus(paths.bus) as bus:
            answer = send_and_wait(bus, COMMAND, {"model_id": model_id,
                                                  "curve_points": curve_points,
                                                  "reason": f"report {model_id}"},
                                   deadline_s=deadline_s)
    elif not paths.duckdb.exists():
        raise UnknownModel(f"no model {model_id!r}: {state_dir} has no registry yet "
                           "(methtrader models lists them)")
    else:
        store = Store(paths.duckdb, read_only=True)
        try:
            answer = _report_or_missing(store, model_id, curve_points)
        finally:
            store.close()
    if not answer.get("found"):
        raise UnknownModel(answer.get("missing") or f"no model {model_id!r}")
    return answer["report"]
