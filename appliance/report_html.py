"""The HTML page of ``methtrader report MODEL_ID --html FILE``: one self-contained file.

The tables are those of the text summary; the plots (each book's equity curve over its
drawdown, and the walk-forward folds' Sharpe ratios) are drawn by matplotlib on the Agg
canvas (no display on a server, and no pyplot global state) and inlined as SVG, so the page
needs no other file and no network.
"""

from __future__ import annotations

import html
import io
import re
from datetime import datetime, timezone
from typing import Any

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from appliance.report import (cost_rows, fmt_bp, fmt_figure, fmt_when, fold_rows,
                              side_by_side)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.excluded { color: #a00; } .muted { color: #777; }
svg { max-width: 100%; height: auto; }
"""


def _svg(fig: Figure) -> str:
    """``fig`` as an inline <svg> element (the XML prolog and doctype dropped)."""
    FigureCanvasAgg(fig)
    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "methtrader"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _dates(ms: list[int]) -> list[datetime]:
    return [datetime.fromtimestamp(t / 1000, tz=timezone.utc) for t in ms]


def book_plot(book: dict[str, Any]) -> str:
    """Equity (top) and drawdown (bottom) of one book, as SVG."""
    fig = Figure(figsize=(9, 4.2))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    curve = book["curve"]
    when = _dates(curve["ts"])
    top.plot(when, curve["equity"], color="#1f5fa8", linewidth=1.2)
    top.axhline(book["capital"], color="#999", linewidth=0.8, linestyle="--")
    top.set_ylabel("equity")
    top.set_title(f"{book['mode']} book {book['book_id']}", fontsize=10)
    bottom.fill_between(when, [-100 * d for d in curve["drawdown"]], 0, color="#c0392b",
                        alpha=0.5, linewidth=0)
    bottom.set_ylabel("drawdown %")
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _svg(fig)


def folds_plot(folds: list[dict[str, Any]], wf_mean: float | None) -> str:
    """Each fold's Sharpe ratio as a bar, the mean as a line, as SVG."""
    fig = Figure(figsize=(9, 2.6))
    ax = fig.subplots()
    sharpes = [f.get("sharpe") or 0.0 for f in folds]
    ax.bar([str(i + 1) for i in range(len(folds))], sharpes,
           color=["#2e8b57" if s > 0 else "#c0392b" for s in sharpes])
    if wf_mean is not None:
        ax.axhline(wf_mean, color="#333", linewidth=1, linestyle="--", label="mean")
        ax.legend(loc="best", fontsize=8)
    ax.axhline(0, color="#999", linewidth=0.8)
    ax.set_xlabel("fold")
    ax.set_ylabel("Sharpe")
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None
                ) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        ("<tr>" if not (classes and classes[i]) else f'<tr class="{e(classes[i])}">')
        + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for i, r in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    """The whole page; every value is escaped, every plot inline."""
    e = html.escape
    m, wf, c = report["model"], report["walk_forward"], report["costs"]
    parts = [f"<h1>Model {e(m['model_id'])}</h1>",
             f"<p>{e(str(m['kind']))} · group {e(str(m['group']))} · timeframe "
             f"{e(str(m['timeframe']))} · <b>{e(str(m['mode']))}</b> since "
             f"{e(fmt_when(m['mode_since']))}{' · pinned' if m.get('pinned') else ''}<br>"
             f"symbols {e(', '.join(m.get('symbols') or []))} · run {e(str(m.get('run_id')))}"
             f"</p>",
             "<h2>Transitions</h2>",
             _html_table(["when (UTC)", "from", "to", "by", "why"], [
                 [fmt_when(t["ts"]), t["from_mode"] or "—", t["to_mode"], t["actor"],
                  t["reason"]] for t in report["transitions"]]),
             "<h2>Validation vs live books</h2>"]
    columns, rows = side_by_side(report)
    parts.append(_html_table(["", *columns], [[n, *(fmt_figure(n, v) for v in vs)]
                                              for n, vs in rows]))
    for book in report["books"]:
        if book["curve"]["ts"]:
            parts.append(book_plot(book))
    if not report["books"]:
        parts.append('<p class="muted">No shadow or prod book yet: the model has not traded.'
                     "</p>")
    parts.append(f"<h2>Walk-forward</h2><p>score {fmt_figure('sharpe', wf.get('wf_score'))} "
                 f"= mean {fmt_figure('sharpe', wf.get('wf_mean'))} − std "
                 f"{fmt_figure('sharpe', wf.get('wf_std'))} / √{len(wf['folds'])} folds</p>")
    if wf["folds"]:
        parts.append(_html_table(
            ["fold", "start", "end", "Sharpe", "return", "drawdown", "trades", "fills"],
            fold_rows(wf["folds"])))
        parts.append(folds_plot(wf["folds"], wf.get("wf_mean")))
    parts.append(f"<h2>Costs</h2><p>taker fee {fmt_bp(c['taker_fee'])}, slippage "
                 f"{fmt_bp(c['slippage'])}</p>")
    parts.append(_html_table(["symbol", "half spread", "traded"], cost_rows(c),
                             ["excluded" if s["excluded"] else "" for s in c["symbols"]]))
    title = e(f"methtrader report {m['model_id']}")
    body = re.sub(r"\n\s*\n", "\n", "\n".join(parts))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            f"<p class=\"muted\">generated {e(fmt_when(report['generated']))} UTC</p>"
            "</body></html>\n")
