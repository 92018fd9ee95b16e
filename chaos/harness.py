"""The chaos harness: scratch state dirs, ``methtrader run`` (and ``fake-bybit``) as real
subprocesses, and the measurement of recovery.

Recovery, for every experiment, is the same observable: the appliance that runs *now* (its pid
in the heartbeat) beats, every service it supervises is running (the ``health`` of
``methtrader status``: OK, no service degraded, backing off or failed), and the feed stored a
candle newer than a given one after the moment of the fault (a ``data_source_update`` event on
the bus, which the feed publishes after the rows are committed to DuckDB). MTTR is the wall time
from the fault (injected, or lifted for an exchange fault) to that moment.

Everything is read the way the TUI reads it: through the bus while ``run`` is up, DuckDB
(read-only) only once it has stopped.
"""

from __future__ import annotations

import contextlib

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import duckdb
import httpx

from appliance.bus import Bus
from appliance.contracts import Event
from appliance.paths import StatePaths
from appliance.status import health
from chaos.experiment import Verdict

METHTRADER = [sys.executable, "-m", "appliance.cli"]

#: a small appliance: two days of history, one model kind, no hold on the clock for a first
#: model, a heartbeat five times a second (recovery is measured to a fifth of a second)
SMALL_ENV: dict[str, str] = {
    "METHTRADER__DATASETS__DAYS": "2",
    "METHTRADER__TRAINING__KINDS": "rf",
    "METHTRADER__TRAINING__BOOTSTRAP_HOLD_S": "0",
    "METHTRADER__SUPERVISOR__HEARTBEAT_INTERVAL_S": "0.2",
    "METHTRADER__DISCOVERY__TICKER_INTERVAL_S": "2",
}
POLL_S = 0.1


#: set by :func:`abort_all` (the runner was interrupted): every wait gives up at once
ABORTED = threading.Event()
_LIVE: "weakref.WeakSet[Harness]" = weakref.WeakSet()


class Aborted(Exception):
    """The chaos run was interrupted (Ctrl-C, SIGTERM): the experiment stops where it is."""


def abort_all() -> None:
    """Stop every process of every live harness now, and make the experiments still running
    in other threads give up at their next wait (an interrupted ``chaos run`` leaves nothing
    running)."""
    ABORTED.set()
    for h in list(_LIVE):
        h.stop_processes()


def wait_until(predicate: Callable[[], Any], timeout_s: float) -> Any:
    """``predicate()``'s first truthy value within ``timeout_s`` wall seconds, else None
    (:class:`Aborted` once the run was interrupted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ABORTED.is_set():
            raise Aborted("the chaos run was interrupted")
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value or None
        time.sleep(POLL_S)


class RunProcess:
    """One ``methtrader run`` subprocess on a state dir, and the bus it writes."""

    def __init__(self, state_dir: Path, args: list[str], env: dict[str, str],
                 log_path: Path) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.proc = subprocess.Popen([*METHTRADER, "run", "--state-dir", str(state_dir),
                                      "--metrics-port", "0", "--exit-with-parent", *args],
                                     stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"),
                                     env={**os.environ, **env})
        self.env = env
        self._bus: Bus | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def bus(self) -> Bus | None:
        """The bus of the state dir (opened once it exists; reopened after it was deleted)."""
        path = StatePaths(self.state_dir).bus
        if self._bus is not None and self._bus.lost():
            self.drop_bus()
        if self._bus is None and path.is_dir():
            self._bus = Bus(path)
        return self._bus

    def drop_bus(self) -> None:
        if self._bus is not None:
            # the experiment may have deleted the bus dir under it: closing then fails, and
            # the harness only needs to stop using that bus
            with contextlib.suppress(Exception):
                self._bus.close()
            self._bus = None

    def healthy(self) -> bool:
        """This process beats, and every service it supervises is running (health OK)."""
        bus = self.bus()
        hb = bus.heartbeat() if bus else None
        if not hb or hb.get("pid") != self.pid or hb.get("stopped"):
            return False
        age = time.time() - float(hb.get("wall_ts", 0))
        return age < 3.0 and health(hb.get("services") or {}) == "OK"

    def services(self) -> dict[str, dict[str, Any]]:
        bus = self.bus()
        hb = (bus.heartbeat() if bus else None) or {}
        return dict(hb.get("services") or {})

    def candle_after(self, since_wall: float, newer_than: int = -1) -> int | None:
        """The latest open time of a feed update stored after ``since_wall`` (wall seconds)
        with a candle newer than ``newer_than`` (ms), or None."""
        bus = self.bus()
        if bus is None:
            return None
        for ev in reversed(bus.events_since(0, kinds=[Event.DATA_SOURCE_UPDATE], limit=50)):
            latest = int(ev["data"].get("latest_open_time") or -1)
            if ev["ts"] >= since_wall and latest > newer_than:
                return latest
        return None

    def latest_candle(self) -> int:
        """The newest candle the feed announced (it announces after its commit), or -1."""
        bus = self.bus()
        evs = bus.events_since(0, kinds=[Event.DATA_SOURCE_UPDATE], limit=50) if bus else []
        return max((int(e["data"].get("latest_open_time") or -1) for e in evs), default=-1)

    def wait_recovered(self, since_wall: float, timeout_s: float,
                       newer_than: int = -1) -> float | None:
        """Wall seconds from ``since_wall`` until this process is healthy and a new candle is
        stored (both observed after ``since_wall``), or None when that did not come within
        ``timeout_s`` (or the process died)."""
        def recovered() -> float | None:
            if not self.alive:
                return None
            if self.healthy() and self.candle_after(since_wall, newer_than) is not None:
                return max(0.0, time.time() - since_wall) or 1e-6
            return None

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive:
            if (took := recovered()) is not None:
                return took
            time.sleep(POLL_S)
        return None

    def cli(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        """``methtrader ARGS --state-dir <this state dir>`` as the operator runs it."""
        return subprocess.run([*METHTRADER, *args, "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **self.env})

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.drop_bus()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """A clean stop (SIGINT, as Ctrl-C); SIGKILL when it does not stop in time."""
        self.drop_bus()
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


class FakeBybit:
    """``methtrader fake-bybit`` on a free loopback port, with its fault knobs."""

    def __init__(self, log_path: Path, seed: int = 7) -> None:
        self.proc = subprocess.Popen([*METHTRADER, "fake-bybit", "--port", "0", "--seed",
                                      str(seed), "--exit-with-parent"], stdout=subprocess.PIPE,
                                     stderr=open(log_path, "ab"), text=True)
        line = (self.proc.stdout.readline() if self.proc.stdout else "").strip()
        if not line.startswith("fake-bybit listening on "):
            self.close()
            raise RuntimeError(f"fake-bybit did not start: {line!r} (see {log_path})")
        self.url = line.rsplit(" ", 1)[1]

    def faults(self, **knobs: Any) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/admin/faults", json=knobs, timeout=5)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        """The server's request counts: ``requests``, ``by_path``, ``ret_codes``, ``faults``."""
        r = httpx.get(f"{self.url}/admin/stats", timeout=5)
        r.raise_for_status()
        return r.json()

    def faulted(self) -> int:
        """Requests the server answered with an injected fault so far."""
        return sum((self.stats().get("faults") or {}).values())

    def clear(self) -> None:
        self.faults(error_ratio=0.0, drop_ratio=0.0, rate_limit_storm=False, latency_ms=0.0,
                    malformed_ratio=0.0, outage="")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Harness:
    """Scratch state dirs under one work dir, and every process started in them."""

    def __init__(self, workdir: Path | None = None, *, speed: float = 60.0,
                 env: dict[str, str] | None = None, keep: bool = False) -> None:
        self._own = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="methtrader-chaos-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.speed = speed
        self.env = {**SMALL_ENV, **(env or {})}
        self.keep = keep
        self._runs: list[RunProcess] = []
        self._fakes: list[FakeBybit] = []
        self._n = 0
        _LIVE.add(self)

    def state_dir(self, name: str) -> Path:
        self._n += 1
        return self.workdir / f"{self._n:02d}-{name}" / "state"

    def start_run(self, state_dir: Path, *args: str, exchange_url: str | None = None,
                  env: dict[str, str] | None = None) -> RunProcess:
        """``run`` on ``state_dir`` (``env`` overrides the harness's small settings)."""
        if ABORTED.is_set():
            raise Aborted("the chaos run was interrupted")
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        extra = (["--exchange", "bybit", "--base-url", exchange_url] if exchange_url
                 else ["--speed", f"{self.speed:g}"])
        run = RunProcess(state_dir, [*extra, *args], {**self.env, **(env or {})},
                         state_dir.parent / "run.err")
        self._runs.append(run)
        return run

    def fake_bybit(self, name: str) -> FakeBybit:
        fake = FakeBybit(self.workdir / f"fake-bybit-{name}.err")
        self._fakes.append(fake)
        return fake

    def stop_processes(self) -> None:
        """Stop every ``run`` and ``fake-bybit`` this harness started (safe to repeat)."""
        for run in list(self._runs):
            run.stop(timeout_s=15)
        for fake in list(self._fakes):
            fake.close()

    def close(self) -> None:
        self.stop_processes()
        _LIVE.discard(self)
        if self._own and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_healthy(h: Harness, v: Verdict, state_dir: Path, timeout_s: float, before: str,
                  **start: Any) -> RunProcess | None:
    """``run`` on ``state_dir`` (``start``: :meth:`Harness.start_run`'s options), once it is
    healthy with a stored candle: the steady state an experiment injects its fault into. None,
    with the failed check on ``v``, when it did not get there within ``timeout_s``."""
    app = h.start_run(state_dir, **start)
    if not v.check(app.wait_recovered(time.time(), timeout_s) is not None,
                   f"the appliance never became healthy before {before}"):
        return None
    return app

# -- reading what was stored (run stopped) -------------------------------------------------------

KEYS: dict[str, str] = {
    "candles": "symbol, interval, open_time",
    "orders": "order_id",
    "fills": "fill_id",
    "books": "book_id",
    "book_positions": "book_id, symbol",
    "ml_models": "model_id",
    "training_runs": "run_id",
}


def stored_rows(state_dir: Path) -> dict[str, list[tuple]]:
    """Every row key of the tables chaos guards (duplicates kept, so they can be counted)."""
    con = duckdb.connect(str(StatePaths(state_dir).duckdb), read_only=True)
    try:
        return {table: con.execute(f"SELECT {cols} FROM {table}").fetchall()
                for table, cols in KEYS.items()}
    finally:
        con.close()


def duplicates(rows: dict[str, list[tuple]]) -> dict[str, int]:
    return {t: len(keys) - len(set(keys)) for t, keys in rows.items() if len(keys) != len(set(keys))}


def missing(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> dict[str, int]:
    out = {}
    for table, keys in before.items():
        gone = set(keys) - set(after.get(table, []))
        if gone:
            out[table] = len(gone)
    return out


def minute_gaps(state_dir: Path, since_ms: int | None = None) -> dict[str, int]:
    """Per symbol, the 1m minutes missing between its first and last stored candle (from
    ``since_ms`` on when given)."""
    con = duckdb.connect(str(StatePaths(state_dir).duckdb), read_only=True)
    try:
        rows = con.execute(
            "SELECT symbol, (max(open_time) - min(open_time)) // 60000 + 1 - count(*) "
            "FROM candles WHERE interval = '1m' AND open_time >= ? GROUP BY symbol",
            [since_ms if since_ms is not None else -1]).fetchall()
    finally:
        con.close()
    return {s: int(n) for s, n in rows if n}
