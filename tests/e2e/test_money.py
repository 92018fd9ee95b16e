"""The money path end to end: a candidate is shadowed, promoted by the operator, trades, and
the kill switch with flatten closes the book — all through the CLI against ``run``."""

from __future__ import annotations

import json
import signal
from decimal import Decimal

import duckdb
import pytest

from tests.e2e.conftest import methtrader, status_json, stderr_of
from tests.e2e.test_learning import SMALL, models_of
from tests.e2e.test_run import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_shadow_promote_trade_then_kill_and_flatten(tmp_path, run_proc):
    state = tmp_path / "state"
    # market time runs on while the other groups train: the first candidate is shadowed
    # (and promoted) without waiting for every group's first model
    env = {**SMALL, "METHTRADER__TRADING__THRESHOLD": "0",
           "METHTRADER__TRAINING__BOOTSTRAP_HOLD_S": "0"}
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0", env=env)
    shadow = wait_for(lambda: next((m for m in models_of(state) if m["mode"] == "shadow"),
                                   None), 180, "a shadow model")

    out = methtrader("promote", shadow["model_id"], "--reason", "e2e: trust it",
                     "--state-dir", str(state), "--json")
    assert json.loads(out.stdout)["promoted"] == shadow["model_id"]
    wait_for(lambda: status_json(state)["trades"] > 0, 120, "prod trades")

    methtrader("kill", "--flatten", "--reason", "e2e drill", "--state-dir", str(state))
    account = state / "sim_account.json"

    def flat() -> bool:
        data = json.loads(account.read_text())
        return all(Decimal(q) == 0 for q, _, _ in data["positions"].values())

    wait_for(flat, 60, "the book to be flat")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, stderr_of(proc)[-3000:]

    st = status_json(state)
    assert st["trades"] > 0 and st["maintenance_mode"] is True
    assert 90_000 < st["equity"] < 110_000 and st["models"]["prod"] == 1
    con = duckdb.connect(str(state / "methtrader.duckdb"), read_only=True)
    audit = con.execute("SELECT actor, action, reason FROM audit_log").fetchall()
    open_prod = con.execute("SELECT count(*) FROM book_positions JOIN books USING (book_id) "
                            "WHERE mode IN ('prod', 'house') AND CAST(qty AS DOUBLE) <> 0"
                            ).fetchone()[0]
    con.close()
    actions = {a[1] for a in audit}
    assert {"command:promote", "maintenance_mode=on", "command:flatten"} <= actions
    assert f"shadow_started {shadow['model_id']}" in actions
    assert open_prod == 0


