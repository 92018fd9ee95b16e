"""A model's report on a real DuckDB state: the registry, its transitions, its books' figures
and curves, the text and HTML renderings. (Asked of a running appliance through the bus:
tests/appliance/services/test_report_command.py.)"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from appliance.book_records import live_figures
from appliance.report import UnknownModel, build_report, fetch_report, render_text, thin
from appliance.report_html import render_html
from appliance.store import Store
from models.registry import get_model
from tests.builders import T0, reported_model, wf_metrics


@pytest.fixture
def reported(state_dir):
    model_id = reported_model(state_dir)
    store = Store(state_dir / "methtrader.duckdb", read_only=True)
    yield store, model_id
    store.close()


def test_the_report_holds_the_models_record_transitions_folds_and_costs(reported) -> None:
    store, model_id = reported
    r = build_report(store, model_id)
    assert (r["model"]["model_id"], r["model"]["mode"], r["model"]["kind"],
            r["model"]["group"], r["model"]["timeframe"]) == (model_id, "prod", "rf", "t1-a",
                                                              "5m")
    assert r["model"]["symbols"] == ["BTCUSDT", "DOGEUSDT"]
    assert [(t["from_mode"], t["to_mode"], t["actor"]) for t in r["transitions"]] == [
        (None, "candidate", "training"), ("candidate", "shadow", "shadow-desk"),
        ("shadow", "prod", "shadow-desk")]
    assert r["transitions"][2]["reason"] == "DSR 0.97 > 0.95 <over prod>"
    assert r["transitions"][2]["ts"] == T0 + 7 * 86_400
    m = wf_metrics()
    assert r["walk_forward"]["folds"] == m["folds"]
    assert r["walk_forward"]["wf_score"] == pytest.approx(1.0 - 0.5 / math.sqrt(3))
    costs = {s["symbol"]: s for s in r["costs"]["symbols"]}
    assert costs["BTCUSDT"]["excluded"] is None and costs["BTCUSDT"]["half_spread"] == 0.0001
    assert "turns its edge" in costs["DOGEUSDT"]["excluded"]
    assert (r["costs"]["taker_fee"], r["costs"]["slippage"]) == (0.00055, 0.0002)
    assert r["validation"]["sharpe"] == 1.1 and r["validation"]["trades"] == 63


def test_each_book_has_its_own_figures_as_the_models_command_computes_them(reported) -> None:
    store, model_id = reported
    r = build_report(store, model_id)
    shadow, prod = r["books"]
    assert (shadow["mode"], prod["mode"]) == ("shadow", "prod")
    # shadow equity 1000 → 1100 → 990 → 1050 from a capital of 1000
    assert shadow["figures"]["total_return"] == pytest.approx(0.05)
    assert shadow["figures"]["max_drawdown"] == pytest.approx(1 - 990 / 1100)
    assert (shadow["figures"]["trades"], shadow["figures"]["fills"],
            shadow["figures"]["bars"]) == (25, 70, 4)
    live = live_figures(store, get_model(store, model_id))  # the prod book, as `models` shows
    assert prod["book_id"] == live["book_id"]
    assert prod["figures"]["sharpe"] == pytest.approx(live["sharpe"], rel=1e-12)
    assert prod["equity"] - prod["capital"] == pytest.approx(live["pnl"])
    assert prod["figures"]["trades"] == live["trades"] == 12


def test_curves_are_thinned_but_keep_the_ends_and_the_trough(reported) -> None:
    store, model_id = reported
    assert all(b["curve"]["ts"] == [] for b in build_report(store, model_id)["books"])
    shadow = build_report(store, model_id, curve_points=3)["books"][0]
    curve = shadow["curve"]
    assert curve["equity"][0] == 1000.0 and curve["equity"][-1] == 1050.0
    assert 990.0 in curve["equity"]  # the trough survives the thinning
    assert max(curve["drawdown"]) == pytest.approx(shadow["figures"]["max_drawdown"])
    assert curve["ts"] == sorted(curve["ts"])
    assert thin(1000, 10, (517,))[:1] == [0] and 517 in thin(1000, 10, (517,))
    assert thin(5, 10) == [0, 1, 2, 3, 4] and thin(5, 0) == []


def test_an_unknown_model_names_the_id_and_where_to_look(reported, state_dir) -> None:
    store, _ = reported
    with pytest.raises(UnknownModel, match="'m-nope'.*methtrader models"):
        build_report(store, "m-nope")
    store.close()
    with pytest.raises(UnknownModel, match="'m-nope'.*methtrader models"):
        fetch_report(state_dir, "m-nope")


def test_non_finite_figures_become_null_so_the_report_is_json(state_dir) -> None:
    model_id = reported_model(state_dir)
    store = Store(state_dir / "methtrader.duckdb")
    store.sql("UPDATE ml_models SET metrics = ? WHERE model_id = ?",
              [json.dumps({**wf_metrics(), "wf_score": float("nan"), "sharpe": float("inf")}),
               model_id])
    r = build_report(store, model_id)
    store.close()
    assert r["walk_forward"]["wf_score"] is None and r["validation"]["sharpe"] is None
    json.dumps(r, allow_nan=False)
    assert "score —" in render_text(r)


def test_the_text_puts_validation_and_each_book_side_by_side(reported) -> None:
    store, model_id = reported
    text = render_text(build_report(store, model_id))
    header = next(line for line in text.splitlines() if "validation" in line and "prod" in line)
    assert header.split() == ["validation", "shadow", "2026-05-28", "prod", "2026-06-04"]
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()
            if line.strip().split(" ")[0] in ("total_return", "max_drawdown", "trades")}
    assert rows["total_return"][:2] == ["3.00%", "5.00%"]
    assert rows["max_drawdown"][1] == "10.00%"
    assert rows["trades"] == ["63", "25", "12"]
    assert "shadow → prod  by shadow-desk: DSR 0.97 > 0.95 <over prod>" in text
    assert "score 0.71 = mean 1.00 - std 0.50 / sqrt(3 folds)" in text
    assert "DOGEUSDT" in text and "no: the spread (0.012)" in text


def test_the_html_is_one_file_with_a_plot_per_book_and_escaped_text(reported) -> None:
    store, model_id = reported
    page = render_html(build_report(store, model_id, curve_points=400))
    assert page.startswith("<!DOCTYPE html>") and model_id in page
    svgs = page.count("<svg")
    assert svgs == 3  # the shadow book, the prod book, the folds
    assert "&lt;over prod&gt;" in page and "<over prod>" not in page
    assert "src=" not in page and "href=\"http" not in page  # nothing fetched from elsewhere
    start = page.index("<svg")
    ET.fromstring(page[start:page.index("</svg>", start) + len("</svg>")])  # well-formed SVG
