"""State dirs with real (tiny) ONNX models registered, for the relocation and backup tests; and
a DuckDB file damaged block by block, for the damaged-store tests."""

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


def damage_blocks(path: Path, table: str) -> list[int]:
    """Overwrite 4 KiB inside each storage block that holds ``table``'s data (the file keeps
    its size, its headers and its catalogue): what a failing disk or a stray write leaves.
    Returns the block numbers."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        blocks = sorted(b for (b,) in con.execute(
            f"SELECT DISTINCT block_id FROM pragma_storage_info('{table}') WHERE block_id >= 0"
        ).fetchall())
    finally:
        con.close()
    rng = np.random.default_rng(7)
    with open(path, "r+b") as f:
        for block in blocks:
            f.seek(3 * 4096 + block * 262_144 + 64)  # past the three headers, inside the block
            f.write(rng.bytes(4096))
    return blocks
