"""The switch commands: ``kill`` (with ``--flatten``), ``resume`` and ``unfreeze``.

They act through the bus while ``run`` is up or down; a kill still works on a damaged bus (it
writes a kill file that ``run`` honours), because the kill switch must fail closed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from appliance.cli_common import emit as _emit, load_config, state_bus
from appliance.config import Config
from appliance.contracts import Command
from appliance.paths import StatePaths


def set_maintenance(args: argparse.Namespace, value: bool) -> int:
    """kill (``value``) or resume. A kill still works on a damaged bus (a kill file); a resume
    also cancels a pending flatten; ``kill --flatten`` waits for the flatten while ``run`` is
    up, and queues it for the next start while it is down."""
    from appliance.bus import MAINTENANCE_MODE, BusError, operator_name

    cfg = load_config(args)
    flatten = getattr(args, "flatten", False)
    try:
        bus = state_bus(cfg)
    except BusError as exc:
        if not value:
            raise BusError(f"{exc}; resume cannot be recorded there: start `methtrader run` "
                           "once (it rebuilds the bus), then resume") from None
        return _kill_without_bus(args, cfg, exc, flatten)
    failed = flattened = None
    with bus:
        entry = bus.set_switch(MAINTENANCE_MODE, value, actor=operator_name(),
                               reason=args.reason, source="cli", clear_kill_file=True)
        word = "ON: no new orders" if value else "off: trading may resume"
        text = f"maintenance_mode {word} (by {entry['actor']}: {entry['reason']})"
        if not value:
            cancelled = bus.cancel_pending(Command.FLATTEN, actor=operator_name(),
                                           reason="resume cancels a pending flatten")
            if cancelled:
                text += f"\ncancelled {len(cancelled)} pending flatten command(s)"
        elif flatten:
            flattened, more, failed = _flatten(bus, cfg, args.reason)
            text += more
    if failed:
        print(f"methtrader: maintenance_mode is ON, but {failed}", file=sys.stderr)
    _emit(args, {"maintenance_mode": value, "audit": entry, "flatten_command": flattened,
                 "error": failed}, text)
    return 1 if failed else 0


def _flatten(bus, cfg: Config, reason: str) -> tuple[dict[str, Any] | None, str, str | None]:
    """(result, text to add, failure) of the flatten that goes with a kill."""
    from appliance.bus import operator_name
    from appliance.commands import CommandFailed, send_and_wait
    from appliance.liveness import is_running

    fargs = {"reason": reason, "actor": operator_name()}
    if not is_running(cfg.state_path):
        cid = bus.send_command(Command.FLATTEN, fargs, source="cli", deadline_s=None)
        return {"queued": cid}, ("\nflatten queued: the appliance is not running; it closes "
                                 "every position with reduce-only orders when it starts (a "
                                 "resume cancels it)"), None
    try:
        result = send_and_wait(bus, Command.FLATTEN, fargs, deadline_s=cfg.bus.command_deadline_s)
    except CommandFailed as exc:
        return None, "", f"flatten failed: {exc}"
    return result, f"\nflatten done: closed {len(result.get('closed') or [])} positions", None


def _kill_without_bus(args: argparse.Namespace, cfg: Config, exc: Exception,
                      flatten: bool) -> int:
    """The bus cannot be opened: write the kill file, which ``run`` honours until a resume."""
    from appliance.safety import write_kill_file

    entry = write_kill_file(cfg.state_path, args.reason, str(exc))
    path = StatePaths(cfg.state_path).kill_file
    text = (f"maintenance_mode ON: the bus is damaged, so a kill file was written at {path} "
            f"(by {entry['actor']}: {entry['reason']}); the appliance honours it until a resume")
    if flatten:
        print("methtrader: maintenance_mode is ON (kill file), but the flatten was not queued: "
              "it needs the bus; start `methtrader run` to rebuild it, then flatten",
              file=sys.stderr)
    _emit(args, {"maintenance_mode": True, "kill_file": entry, "flatten_command": None}, text)
    return 1 if flatten else 0


def cmd_unfreeze(args: argparse.Namespace) -> int:
    from appliance.bus import DEPLOYS_FROZEN, operator_name

    cfg = load_config(args)
    with state_bus(cfg) as bus:
        entry = bus.set_switch(DEPLOYS_FROZEN, False, actor=operator_name(),
                               reason=args.reason, source="cli")
    _emit(args, {"deploys_frozen": False, "audit": entry},
          f"deploys_frozen off (by {entry['actor']}: {entry['reason']})")
    return 0
