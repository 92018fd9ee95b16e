"""The order journal's fast lines are the JSON lines the generic path writes, byte for byte,
and read back as the orders they were."""

from __future__ import annotations

from decimal import Decimal

from appliance.order_journal import OrderJournal

ORDERS = [
    ("mt-0123456789abcdef00000001", "prod-m-20261128-t1-a-rf", "BTCUSDT", "Buy",
     Decimal("0.004"), 1_764_547_200_000),
    ("mt-0123456789abcdef00000002", 'odd "book" \\ id é', "1000PEPEUSDT", "Sell",
     Decimal("1E+3"), 1_764_547_200_001),
]


def test_fast_lines_are_the_json_lines_and_read_back_as_the_orders(tmp_path) -> None:
    fast, generic = OrderJournal(tmp_path / "fast"), OrderJournal(tmp_path / "generic")
    for _ in range(2):  # the second time from the remembered escapes
        fast.append_orders(ORDERS)
        generic.append({"order_id": o, "book_id": b, "symbol": s, "side": side,
                        "qty": str(q), "ts": ts} for o, b, s, side, q, ts in ORDERS)
    assert (tmp_path / "fast").read_bytes() == (tmp_path / "generic").read_bytes()
    entries = fast.entries()
    assert fast.damaged == 0 and len(entries) == 4
    assert [(e["order_id"], e["book_id"], e["symbol"], e["side"], Decimal(e["qty"]), e["ts"])
            for e in entries[:2]] == ORDERS
    fast.clear()
    assert fast.entries() == []
    fast.close()
    generic.close()
