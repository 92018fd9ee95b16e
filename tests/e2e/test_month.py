"""A month of market time through `methtrader run`: the lifecycle and the books stay honest.

Issue 9's acceptance run: candidates are shadowed and the nightly rule promotes them after a
full shadow period (2 market days here); at most one prod model per group at every moment (from the
audit log and from the books), the account identity at every bar, no parity incident, and every
model's ``live`` figures in ``models --json`` recomputed from its own book's rows.

The suite runs 6 market days (three shadow periods, six nightly retrains: the first promotions
come after two or three days, and a later shadow may replace a prod model) to fit CI's time;
``METHTRADER_TEST_DAYS=30`` runs the full month (about five times as long).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from decimal import Decimal

import duckdb
import numpy as np
import pytest

from data.intervals import periods_per_year
from models.metrics import sharpe_ratio
from tests.e2e.conftest import methtrader, stderr_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]
DAYS = int(os.environ.get("METHTRADER_TEST_DAYS", "6"))
SHADOW_DAYS = 2

# a market with an edge a model can find after spreads and funding (the default sim leaves
# one only on its more volatile symbols): a month in which nothing earns promotion proves little
MONTH = {"METHTRADER__DATASETS__DAYS": "10", "METHTRADER__TRAINING__KINDS": "rf",
         "METHTRADER__SIM__TREND_SHARE": "0.25",
         "METHTRADER__SHADOW__PERIOD": f"{SHADOW_DAYS}d", "METHTRADER__SHADOW__MIN_TRADES": "5",
         "METHTRADER__DISCOVERY__MIN_TURNOVER_USD": "100000000"}


def test_a_month_keeps_one_prod_per_group_and_honest_books(tmp_path, run_proc):
    state = tmp_path / "state"
    proc = run_proc(state, "--until", f"{DAYS}d", "--speed", "20000", "--metrics-port", "0",
                    env=MONTH)
    assert proc.wait(timeout=60 * DAYS) == 0, stderr_of(proc)[-3000:]
    con = duckdb.connect(str(state / "methtrader.duckdb"), read_only=True)
    try:
        # one prod per group at every moment, replaying the audit log in order
        groups = dict(con.execute("SELECT model_id, grp FROM ml_models").fetchall())
        mode: dict[str, str] = {}
        promotions = 0
        for action, details in con.execute(
                "SELECT action, details FROM audit_log WHERE action LIKE 'registered %' OR "
                "action LIKE 'promoted %' OR action LIKE 'retired %' OR action LIKE "
                "'rejected %' OR action LIKE 'shadow_started %' OR action LIKE 'archived %' "
                "ORDER BY id").fetchall():
            verb, model_id = action.split(" ", 1)
            mode[model_id] = json.loads(details)["to"]
            promotions += verb == "promoted"
            prods = defaultdict(int)
            for m, md in mode.items():
                if md == "prod":
                    prods[groups[m]] += 1
            assert max(prods.values(), default=0) <= 1, action
        assert promotions >= 1, "a month without a single promotion proves little"
        # every promotion was the nightly rule's, after a full shadow period
        for actor, started, promoted in con.execute(
                "SELECT a.actor, m.shadow_started, m.promoted FROM audit_log a JOIN ml_models m "
                "ON a.action = 'promoted ' || m.model_id WHERE m.promoted IS NOT NULL"
                ).fetchall():
            assert actor == "shadow", f"promoted by {actor}, not by the rule"
            assert promoted - started >= SHADOW_DAYS * 86_400  # a full shadow period first
        # ... and from the books: a group's prod books never hold equity at the same bar
        spans = defaultdict(list)
        for book_id, grp, first, last in con.execute(
                "SELECT e.book_id, b.grp, min(e.ts), max(e.ts) FROM book_equity e JOIN books b "
                "USING (book_id) WHERE b.mode = 'prod' GROUP BY 1, 2").fetchall():
            spans[grp].append((first, last, book_id))
        for grp, items in spans.items():
            items.sort()
            for (_, end, a), (start, _, b) in zip(items, items[1:]):
                assert start > end, f"{grp}: {a} and {b} overlap"
        # the account identity at every bar
        rows = con.execute("SELECT ts, exact, venue_exact, books FROM equity ORDER BY ts"
                           ).fetchall()
        assert len(rows) > DAYS * 2 // 3 * 288
        for ts, exact, venue, books in rows:
            assert Decimal(exact) == sum(Decimal(v) for v in json.loads(books).values()), ts
            if venue is not None:  # NULL: a funding payment was owed for want of its price
                assert abs(Decimal(exact) - Decimal(venue)) < Decimal("1e-9"), ts
        # the venue is valued as of each bar (charges after it added back), so even a loaded
        # machine that lags hours behind the market clock is checked at (nearly) every bar
        assert sum(r[2] is not None for r in rows) >= 0.95 * len(rows)
        assert con.execute("SELECT count(*) FROM incidents WHERE kind = 'parity'"
                           ).fetchone()[0] == 0
        # no order failed at the venue (a book's close sent reduce-only while another book
        # held the other side was refused there)
        assert con.execute("SELECT reason FROM orders WHERE status = 'failed'").fetchall() == []
        fill_ids = [r[0] for r in con.execute("SELECT fill_id FROM fills").fetchall()]
        assert len(fill_ids) == len(set(fill_ids))
        book_rows = {r[0]: r for r in con.execute(
            "SELECT book_id, capital, trades, fills FROM books").fetchall()}
        equity = defaultdict(list)
        for book_id, e in con.execute("SELECT book_id, equity FROM book_equity ORDER BY ts"
                                      ).fetchall():
            equity[book_id].append(e)
    finally:
        con.close()
    # models --json: live figures recompute from the model's own book rows
    live_models = [m for m in json.loads(methtrader("models", "--json", "--state-dir",
                                                    str(state)).stdout) if m["live"]]
    assert live_models
    for m in live_models:
        live = m["live"]
        _, capital, trades, fills = book_rows[live["book_id"]]
        eq = np.array([float(capital)] + equity[live["book_id"]])
        assert live["trades"] == trades and live["fills"] == fills
        assert live["pnl"] == pytest.approx(eq[-1] - eq[0], rel=1e-9, abs=1e-9)
        if live["sharpe"] is not None:
            expected = sharpe_ratio(np.diff(eq) / eq[:-1], periods_per_year(m["timeframe"]))
            assert live["sharpe"] == pytest.approx(expected, rel=1e-9)
