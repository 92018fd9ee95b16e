"""The experiments, most valuable first; ``methtrader chaos list`` prints them."""

from __future__ import annotations

from chaos.experiment import Experiment
from chaos.experiments import (bus_loss, disk_full, exchange, positions_kill, process_kill,
                               service_crash, store_fault, storm, worker_kill)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    process_kill.EXPERIMENT, positions_kill.EXPERIMENT, exchange.OUTAGE, exchange.DROP, exchange.STALL, storm.EXPERIMENT,
    service_crash.EXPERIMENT, bus_loss.EXPERIMENT, store_fault.EXPERIMENT,
    disk_full.EXPERIMENT, worker_kill.EXPERIMENT)}
