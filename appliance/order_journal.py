"""The order journal: the write-ahead log of the order gateway (``<state>/orders.journal``).

Before a bar's orders leave, one ``write`` appends a line per order (its ``orderLinkId``, book,
symbol, side, quantity) to this file; only then are they sent. Their outcome goes to DuckDB
afterwards, in one transaction with the fills and the books, and the journal is emptied. A
``write`` is in the kernel's page cache when it returns, so a SIGKILL at any moment cannot lose
it (a power cut is what reconciliation with the venue is for), and it costs microseconds where a
DuckDB transaction costs milliseconds on the path from a bar to its orders.

At the next start, every journalled order DuckDB does not know is settled by asking the venue
for it (:meth:`appliance.order_gateway.OrderGateway.settle_pending`): its fill is adopted into
its book, or it is recorded as never executed.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

#: what every journalled order carries (:meth:`OrderGateway.send` writes them)
ENTRY_KEYS = frozenset({"order_id", "book_id", "symbol", "side", "qty", "ts"})
QUOTED_KEPT = 4096  # book ids and symbols kept escaped


class OrderJournal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.damaged = 0  # lines the last entries() could not read (not a torn last one)
        self._quoted: dict[str, str] = {}  # book ids and symbols as JSON strings

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        """One ``write`` for the whole batch: the entries are there, or (a crash before the
        call returned) none of them was sent."""
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        self._write("".join(dumps(e) + "\n" for e in entries).encode())

    def append_orders(self, orders: Iterable[tuple[str, str, str, str, Decimal, int]]) -> None:
        """:meth:`append` of the gateway's orders as (order id, book id, symbol, side, qty,
        ts): the same lines, one ``write``, without a JSON encoder per order (it cost ~4 µs
        an order on the path from a bar to its orders). Book ids and symbols are escaped once
        each and remembered; order ids (the gateway's own ``mt-<hex>``), sides (Buy, Sell),
        decimal quantities and integer times need no escaping."""
        self._write(self.order_lines(orders))

    def order_lines(self, orders: Iterable[tuple[str, str, str, str, Decimal, int]]) -> bytes:
        """What :meth:`append_orders` writes for ``orders`` (nothing is written)."""
        quoted = self._quoted
        lines = []
        for order_id, book_id, symbol, side, qty, ts in orders:
            book = quoted.get(book_id) or self._quote(book_id)
            sym = quoted.get(symbol) or self._quote(symbol)
            lines.append(f'{{"order_id":"{order_id}","book_id":{book},"symbol":{sym},'
                         f'"side":"{side}","qty":"{qty}","ts":{ts:d}}}\n')
        return "".join(lines).encode()

    def _quote(self, text: str) -> str:
        if len(self._quoted) >= QUOTED_KEPT:
            self._quoted.clear()
        out = self._quoted[text] = json.dumps(text)
        return out

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def entries(self) -> list[dict[str, Any]]:
        """What the journal holds. A torn last line (no newline: a crash mid-write) is
        skipped, as its order was not sent; any other line that does not read as an order is
        skipped too and counted in ``damaged`` (its order may have left: the caller says so,
        and reconciliation with the venue halts a symbol whose position differs)."""
        out: list[dict[str, Any]] = []
        self.damaged = 0
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return out
        lines = text.split("\n")  # the last item is "" after a complete line, else torn
        for line in lines[:-1]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if isinstance(entry, dict) and ENTRY_KEYS <= entry.keys():
                out.append(entry)
            elif line.strip():
                self.damaged += 1
        return out

    def clear(self) -> None:
        """Everything journalled is in DuckDB now."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)
