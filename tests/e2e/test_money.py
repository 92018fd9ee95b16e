"""The money path end to end: a candidate is shadowed, promoted by the operator, trades, and
the kill switch with flatten closes the book — all through the CLI against ``run``."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from appliance.bus import Bus
from appliance.contracts import Event
from appliance.paths import StatePaths
from tests.e2e.conftest import clock_at, methtrader, status_json, stderr_of
from tests.e2e.test_learning import SMALL, models_of
from tests.e2e.test_run import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

#: the least work that still takes the money path: the top-tier pairs only (BTC and ETH, with
#: SOL while its turnover is above the bar: one group, one training instead of 21 pairs in five
#: groups), two days of history and two walk-forward folds. Market time is not held for a
#: first model: the shadow desk takes the first candidate at its next pass
ENV = {**SMALL, "METHTRADER__DATASETS__DAYS": "2", "METHTRADER__TRAINING__FOLDS": "2",
       "METHTRADER__DISCOVERY__MIN_TURNOVER_USD": "1100000000",
       "METHTRADER__TRADING__THRESHOLD": "0", "METHTRADER__TRAINING__BOOTSTRAP_HOLD_S": "0"}


class ShadowWatch:
    """The first model the shadow desk moves to shadow, from the lifecycle's
    ``model_transition`` events on ``run``'s bus (opened once ``run`` has made it), read as the
    TUI reads them. Each look used to be a ``methtrader models`` process (about 0.6 s of CPU),
    back to back for the whole wait: on a loaded machine they took the CPU ``run`` and its
    training needed to get there."""

    def __init__(self, state: Path) -> None:
        self.path = StatePaths(state).bus
        self.bus: Bus | None = None
        self.seq = 0

    def __call__(self) -> str | None:
        if self.bus is None:
            if not self.path.is_dir():
                return None
            self.bus = Bus(self.path)
        for e in self.bus.events_since(self.seq, kinds=[Event.MODEL_TRANSITION]):
            self.seq = e["seq"]
            if e["data"].get("to_mode") == "shadow":
                return e["data"]["model_id"]
        return None

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()


def test_shadow_promote_trade_then_kill_and_flatten(tmp_path, run_proc):
    state = clock_at(tmp_path / "state", 12)  # the same history whatever the time of day
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0", env=ENV)
    watch = ShadowWatch(state)
    try:
        shadow_id = wait_for(watch, 180, "a shadow model")
    finally:
        watch.close()
    # the operator sees it in shadow, as the CLI lists it
    shadow = next(m for m in models_of(state) if m["model_id"] == shadow_id)
    assert shadow["mode"] == "shadow"

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


