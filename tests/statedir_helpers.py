"""State dirs with real (tiny) ONNX models registered, for the relocation and backup tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from appliance import lifecycle
from appliance.store import Store
from models.artifacts import sha256_file, write_run
from models.features import FEATURE_NAMES

F = len(FEATURE_NAMES)


@functools.cache
def tiny_rf():
    """A real random forest on random features (lookback 1), trained once per process."""
    from models.kinds import train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1, F)).astype(np.float32)
    y = np.digitize(x[:, -1, 0], [-0.43, 0.43])
    return train("rf", x, y, params={"n_estimators": 4, "tree_batches": 1})


def receipt(run_id: str, sharpe: float = 1.0, symbols: tuple[str, ...] = ("BTCUSDT",)) -> dict:
    return {"run_id": run_id, "kind": "rf", "group": "t1-a", "symbols": list(symbols),
            "timeframe": "5m", "params": {"lookback": 1}, "metrics": {"sharpe": sharpe},
            "tags": {}, "parent_run_id": None, "feature_set": "fs1", "dataset_sha256": "d" * 64,
            "loss_curve": [], "started": 1.0, "ended": 2.0}


def trained_state(state: Path, run_ids: tuple[str, ...] = ("r1",),
                  prod: str | None = None) -> None:
    """A stopped state dir with real ONNX models registered in order (sharpe 0, 1, ...; one
    group and kind, so each new candidate supersedes the one before); ``prod`` (a run id) is
    promoted right after it is registered."""
    state.mkdir(parents=True, exist_ok=True)
    store = Store(state / "methtrader.duckdb")
    try:
        for i, run_id in enumerate(run_ids):
            r = write_run(state, run_id, tiny_rf().export_onnx, {},
                          receipt(run_id, sharpe=float(i)))
            lifecycle.register(store, r, now=1000.0 + i)
            if run_id == prod:
                lifecycle.promote(store, f"m-{run_id}", actor="test", reason="setup",
                                  now=1000.5 + i)
    finally:
        store.close()


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path → sha256."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file()}
