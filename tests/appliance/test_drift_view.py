"""``methtrader drift``'s text says when a symbol is above its line but not yet drift."""

from __future__ import annotations

from appliance.drift_view import format_drift, select


def view(verdict: str, above: int) -> dict:
    row = {"model_id": "m-1", "group": "t1-a", "timeframe": "5m", "kl": 0.3,
           "features": {"vol_12": 0.5}, "verdict": verdict, "line": 0.2, "mean": -3.0,
           "std": 0.4, "zscore": 4.1, "points": 336, "above": above, "history": [[0, 0.3]],
           "moved": ["vol_12"], "bars": 864, "vol_ratio": None, "last_retrain": None}
    return select({"ts": 0, "sigma": 3.0, "persist": 6, "window_s": 259200, "interval_s": 3600,
                   "symbols": {"BTCUSDT": row}, "retrains": []}, [])


def test_above_the_line_counts_passes_until_drift():
    text = format_drift(view("ok", 3), detail=False)
    assert "for 6 passes in a row" in text.splitlines()[0]
    assert "BTCUSDT      ok 3/6" in text
    assert "BTCUSDT      drift" in format_drift(view("drift", 6), detail=False)
    assert "BTCUSDT      ok   " in format_drift(view("ok", 0), detail=False)
