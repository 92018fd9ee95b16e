"""``methtrader chaos``: run experiments in a scratch appliance and report (and record) them.

Results are recorded as incidents of kind ``chaos`` (the Incidents screen's chaos count and MTTR
column) with the MTTR in the message (``mttr=1.234s``), and published on the bus of the
appliance named by ``--state-dir`` when one is given: into its DuckDB file when it is stopped,
and as incident events (the TUI shows them live, the audit journal keeps them) while it runs.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chaos.experiment import Result, incident_message
from chaos.experiments import EXPERIMENTS
from chaos.harness import Harness, abort_all

#: the short bounds of a plain ``chaos run`` (the 5-minute outage is ``bench chaos``)
QUICK: dict[str, dict[str, Any]] = {"exchange-outage": {"fault_s": 30.0},
                                    "exchange-drop": {"fault_s": 30.0},
                                    "exchange-stall": {"fault_s": 30.0},
                                    "rate-limit-storm": {"fault_s": 30.0}}
KILL_SEEDS = 5
#: experiments at once in a plain ``chaos run``: most of an experiment's wall time is waiting
#: (for a minute boundary, a fault held, a restart), so three lanes fit 2 cores; ``bench
#: chaos`` keeps one, so that its MTTR figures carry no contention
LANES = 3
MAX_LANES = 8


def runs_of(names: list[str], seed: int, kill_seeds: int = KILL_SEEDS) -> list[tuple[str, int]]:
    """The (experiment, seed) runs of ``names`` in order: process-kill ``kill_seeds`` times
    (seeds ``seed``, ``seed+1``, …), every other experiment once."""
    return [(name, seed + i) for name in names
            for i in range(kill_seeds if name == "process-kill" else 1)]


def run_one(name: str, seed: int, bounds: dict[str, Any], workdir: Path | None,
            lanes: int) -> Result:
    """One run of one experiment in a harness of its own (its own scratch work dir, state
    dirs, ``run`` and ``fake-bybit`` processes on free loopback ports): two lanes share
    nothing but the machine."""
    with Harness(workdir) as h:
        r = EXPERIMENTS[name](h, seed, **bounds)
    r.details["seed"] = seed
    r.details["lanes"] = lanes
    return r


def run_experiments(names: list[str], seed: int, *, bounds: dict[str, dict[str, Any]] | None
                    = None, kill_seeds: int = KILL_SEEDS, workdir: Path | None = None,
                    lanes: int = 1) -> list[Result]:
    """Each named experiment once (process-kill ``kill_seeds`` times, seeds ``seed``,
    ``seed+1``, …), each in a scratch work dir removed afterwards (under ``workdir``, kept, when
    given), at most ``lanes`` at once. The results are in the order of ``names`` whatever order
    the runs end in, each with its seed and the lane count in ``details``."""
    if not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"lanes must be 1..{MAX_LANES}, not {lanes}")
    bounds = QUICK if bounds is None else bounds
    runs = runs_of(names, seed, kill_seeds)

    def one(k: int) -> Result:
        name, s = runs[k]
        where = None if workdir is None else Path(workdir) / f"{k:02d}-{name}-{s}"
        return run_one(name, s, bounds.get(name, {}), where, lanes)

    if lanes == 1:  # in this thread: a Ctrl-C reaches the experiment and its harness cleans up
        return [one(k) for k in range(len(runs))]
    pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="chaos-lane")
    try:
        futures = [pool.submit(one, k) for k in range(len(runs))]
        return [f.result() for f in futures]
    except BaseException:
        # interrupted: runs not started are dropped, the running ones' processes are stopped
        # now and their experiments give up at their next wait
        abort_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def interrupt_on_sigterm() -> None:
    """SIGTERM stops a chaos run as Ctrl-C does: the harnesses stop every process they
    started before the command exits (130)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def record(state_dir: Path, results: list[Result]) -> str:
    """Record the results as ``chaos`` incidents of the appliance at ``state_dir``; says where."""
    from appliance.bus import Bus
    from appliance.contracts import Event
    from appliance.liveness import is_running
    from appliance.paths import StatePaths
    from appliance.safety import require_state_dir
    from appliance.store import Store

    require_state_dir(state_dir)
    paths = StatePaths(state_dir)
    with Bus(paths.bus) as bus:
        for r in results:
            msg = incident_message(r)
            bus.publish(Event.INCIDENT, {"service": "chaos", "kind": "chaos", "message": msg,
                                         "mttr_s": r.mttr_s}, service="chaos")
            bus.audit(actor="chaos", action="chaos:run", reason=msg, details=r.as_dict())
    if is_running(state_dir):
        return "sent to the running appliance (events and audit journal)"
    store = Store(paths.duckdb)
    try:
        for r in results:
            store.record_incident("chaos", "chaos", incident_message(r), None, time.time())
    finally:
        store.close()
    return f"recorded in {paths.duckdb}"
