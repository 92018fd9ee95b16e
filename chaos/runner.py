"""``methtrader chaos``: run experiments in a scratch appliance and report (and record) them.

Results are recorded as incidents of kind ``chaos`` (the Incidents screen's chaos count and MTTR
column) with the MTTR in the message (``mttr=1.234s``), and published on the bus of the
appliance named by ``--state-dir`` when one is given: into its DuckDB file when it is stopped,
and as incident events (the TUI shows them live, the audit journal keeps them) while it runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chaos.experiment import Result, incident_message
from chaos.experiments import EXPERIMENTS
from chaos.harness import Harness

#: the short bounds of a plain ``chaos run`` (the 5-minute outage is ``bench chaos``)
QUICK: dict[str, dict[str, Any]] = {"exchange-outage": {"fault_s": 30.0},
                                    "exchange-drop": {"fault_s": 30.0},
                                    "exchange-stall": {"fault_s": 30.0},
                                    "rate-limit-storm": {"fault_s": 30.0}}
KILL_SEEDS = 5


def run_experiments(names: list[str], seed: int, *, bounds: dict[str, dict[str, Any]] | None
                    = None, kill_seeds: int = KILL_SEEDS, workdir: Path | None = None
                    ) -> list[Result]:
    """Each named experiment once (process-kill ``kill_seeds`` times, seeds ``seed``,
    ``seed+1``, …), in a scratch work dir removed afterwards."""
    bounds = QUICK if bounds is None else bounds
    out: list[Result] = []
    with Harness(workdir) as h:
        for name in names:
            exp = EXPERIMENTS[name]
            for i in range(kill_seeds if name == "process-kill" else 1):
                r = exp(h, seed + i, **bounds.get(name, {}))
                r.details["seed"] = seed + i
                out.append(r)
    return out


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
