"""Small real objects for tests: finished training runs (real artifact folders and receipts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.artifacts import write_run


def fake_run(state_dir: Path, run_id: str, sharpe: float = 1.0, group: str = "t1-a",
             kind: str = "rf", symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
             timeframe: str = "5m") -> dict[str, Any]:
    """A run folder with a (fake) model file and its receipt, as a training job leaves it."""

    def write_model(path: Path) -> None:
        path.write_bytes(b"onnx bytes of " + run_id.encode())

    return write_run(state_dir, run_id, write_model, {"params.json": {"a": 1}}, {
        "run_id": run_id, "kind": kind, "group": group, "symbols": list(symbols),
        "timeframe": timeframe, "params": {"a": 1}, "metrics": {"sharpe": sharpe},
        "tags": {"autogen": False}, "parent_run_id": None, "feature_set": "fs1",
        "dataset_sha256": "d" * 64, "loss_curve": [1.0, 0.5], "started": 1.0, "ended": 2.0})


def record_book(store, model_id: str, mode: str, since: float, equities: list[float], *,
                capital: float = 1000.0, trades: int = 0, fills: int = 0, bar_ms: int = 300_000,
                group: str = "t1-a") -> str:
    """What the trading engine writes for one of a model's books: the book row and its
    per-bar equity (one point per bar after ``since``); returns the book id."""
    from appliance.books import Book, book_id_of
    from appliance.ledger_store import save_book

    book_id = book_id_of(mode, model_id, since)
    start_ms = int(round(since * 1000))
    for i, equity in enumerate(equities):
        store.sql("INSERT INTO book_equity VALUES (?, ?, ?, ?)",
                  [start_ms + (i + 1) * bar_ms, book_id, equity, repr(equity)])
    save_book(store, Book(book_id, model_id, mode, group, start_ms, capital,
                          equities[-1] if equities else capital, exact=False, trades=trades,
                          fills=fills), start_ms)
    return book_id


DAY = 86_400.0
T0 = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC: a fixed market time


def wf_metrics() -> dict[str, Any]:
    """A training run's record as models.validation writes it: 3 folds, costs with one
    symbol excluded (its spread turns the edge into a loss)."""
    folds = [{"start": int((T0 - (30 - 7 * k) * DAY) * 1000),
              "end": int((T0 - (23 - 7 * k) * DAY) * 1000), "sharpe": s, "trades": 20 + k,
              "fills": 60 + k, "total_return": 0.01 * s, "max_drawdown": 0.02 + 0.01 * k,
              "bars": 2016} for k, s in enumerate((1.5, 0.5, 1.0))]
    return {"sharpe": 1.1, "trades": 63, "fills": 183, "total_return": 0.03,
            "max_drawdown": 0.04, "bars": 6048, "psr": 0.97, "folds": folds,
            "wf_mean": 1.0, "wf_std": 0.5, "wf_score": 1.0 - 0.5 / 3 ** 0.5, "timeframe": "5m",
            "costs": {"taker_fee": 0.00055, "slippage": 0.0002,
                      "half_spread": {"BTCUSDT": 0.0001, "DOGEUSDT": 0.0023},
                      "excluded": {"DOGEUSDT": "the spread (0.012) turns its edge after fees "
                                                "(0.004) into a loss in the test blocks"}}}


def reported_model(state_dir: Path, run_id: str = "rep") -> str:
    """A stopped state dir with one model that went candidate → shadow → prod, with its shadow
    book (closed) and its prod book: everything ``methtrader report`` shows. Its model id."""
    from appliance import lifecycle
    from appliance.store import Store

    state_dir.mkdir(parents=True, exist_ok=True)
    r = write_run(state_dir, run_id, lambda p: p.write_bytes(b"onnx"), {}, {
        "run_id": run_id, "kind": "rf", "group": "t1-a", "symbols": ["BTCUSDT", "DOGEUSDT"],
        "timeframe": "5m", "params": {}, "metrics": wf_metrics(), "tags": {},
        "parent_run_id": None, "feature_set": "fs1", "dataset_sha256": "d" * 64,
        "loss_curve": [], "started": 1.0, "ended": 2.0})
    model_id = f"m-{run_id}"
    store = Store(state_dir / "methtrader.duckdb")
    try:
        lifecycle.register(store, r, now=T0)
        lifecycle.start_shadow(store, model_id, actor="shadow-desk", reason="best candidate",
                               now=T0 + 60)
        record_book(store, model_id, "shadow", T0 + 60, [1000.0, 1100.0, 990.0, 1050.0],
                    trades=25, fills=70)
        lifecycle.promote(store, model_id, actor="shadow-desk",
                          reason="DSR 0.97 > 0.95 <over prod>", now=T0 + 7 * DAY)
        record_book(store, model_id, "prod", T0 + 7 * DAY,
                    [1000.0 * (1.001 ** i) * (0.999 if i % 2 else 1.0) for i in range(1, 50)],
                    capital=1000.0, trades=12, fills=30)
    finally:
        store.close()
    return model_id
