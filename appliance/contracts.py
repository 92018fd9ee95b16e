"""The bus's vocabulary, declared once: event kinds, snapshot names, operator commands.

The appliance's processes talk through the bus (:mod:`appliance.bus`): ``run``'s services publish
events and snapshots, the CLI and the TUI read them and queue commands. A name typed differently
on the two sides fails silently — the TUI just never shows the event — so every name lives here,
the bus refuses one that is not declared, and the payloads of the events a reader depends on are
typed (``TypedDict``: what a publisher must put in, what a reader may take out).

The enums are ``StrEnum``: a member *is* its string, so what the bus stores, and what an older
reader of it sees, is unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict, TypeVar

_Name = TypeVar("_Name", bound=StrEnum)


class Event(StrEnum):
    """Kinds of bus events (``Bus.publish``), newest last in the event log."""

    TRADE = "trade"  # a fill in a book: TradeEvent
    INCIDENT = "incident"  # IncidentEvent
    DATA_SOURCE_UPDATE = "data_source_update"  # the feed stored candles
    TRAINING_PROGRESS = "training_progress"  # a training run's epoch/fold/percent
    SWITCH = "switch"  # a kill switch or deploy freeze changed
    SHADOW_CHECK = "shadow_check"  # a nightly verdict on a shadow
    PAIR_EVENT = "pair_event"  # discovery: a pair became (un)tradable
    NOTIFICATION = "notification"  # what the notifier sent
    MODEL_TRANSITION = "model_transition"  # ModelTransitionEvent (the lifecycle)
    MODEL_REGISTERED = "model_registered"  # a training run's model entered the registry
    JOBS_REQUEUED = "jobs_requeued"  # jobs a dead worker held were queued again
    JOB_FAILED = "job_failed"  # a job's last attempt failed: it will not run again
    DISCOVERY_THROTTLED = "discovery_throttled"  # discovery slowed for the rate limit
    DELISTING = "delisting"  # the venue is delisting a symbol
    DRIFT_RETRAIN = "drift_retrain"  # DriftRetrainEvent: the 3σ rule queued an early retrain
    VOL_REGIME = "vol_regime"  # a symbol's seasonal volatility regime changed (services/drift.py)


class Snapshot(StrEnum):
    """Names of the latest-value snapshots (``Bus.put_snapshot``)."""

    STATUS = "status"  # counts for `methtrader status`
    ALLOCATION = "allocation"  # the capital split across groups
    BACKFILL = "backfill"  # per-symbol backfill progress
    MODELS = "models"  # the registry's models, for the TUI
    MODEL_LIVE = "model_live"  # each model's live book figures
    REGISTRY = "registry"  # registry version and counts
    PIPELINE = "pipeline"  # datasets and their manifests
    TRAINING = "training"  # training runs and the queue
    INCIDENTS = "incidents"  # the latest incidents from DuckDB (the Incidents screen's history)
    CHAOS = "chaos"  # the weekly chaos schedule and its last result (services/chaos.py)
    DRIFT = "drift"  # per-symbol feature drift and the 3σ verdict (services/drift.py)
    AUTOML = "automl"  # the weekly AutoML studies: trials, pruned, best, values, verdict


class Command(StrEnum):
    """Operator commands ``run`` executes (``Bus.send_command``); kill and resume are switches,
    not commands, so that they work while ``run`` is down."""

    PROMOTE = "promote"
    DEMOTE = "demote"
    ROLLBACK = "rollback"
    PIN = "pin"
    UNPIN = "unpin"
    FLATTEN = "flatten"
    RECONCILE = "reconcile"
    BACKUP = "backup"
    REPORT = "report"
    CHAOS_CRASH = "chaos_crash"  # raise inside a named service (appliance/chaos_hook.py)
    CHAOS_STORE_FAULT = "chaos_store_fault"  # refuse the next DuckDB writes (chaos_hook.py)
    CHAOS_DISK_FULL = "chaos_disk_full"  # store and lake writes fail with ENOSPC for a while


class TradeEvent(TypedDict):
    """A fill in a book (:func:`appliance.order_gateway.trade_event`); decimals as strings."""

    ts_ms: int
    symbol: str
    side: str  # "Buy" or "Sell"
    qty: str
    price: str
    fee: str
    pnl: float  # realised on the closing part, net of the fee
    trade: bool  # an entry or a flip (else it adds to or trims a position)
    model_id: str
    book_id: str
    mode: str  # "prod", "shadow" or "house"
    reduce_only: bool


class IncidentEvent(TypedDict):
    service: str
    kind: str  # crash, failed, restart, outage, recovered, parity, chaos, ...
    message: str
    mttr_s: NotRequired[float | None]  # a chaos incident's time to recovery (the MTTR column)


class ModelTransitionEvent(TypedDict):
    """One lifecycle transition (:class:`appliance.lifecycle.Transition`)."""

    model_id: str
    group: str
    kind: str  # the model kind (rf, mlp, ...)
    from_mode: str | None
    to_mode: str
    actor: str
    reason: str
    ts: float  # market time
    version: int  # the registry version it made
    details: dict[str, Any]
    action: str  # "promoted", "retired", ...


class DriftRetrainEvent(TypedDict):
    """A symbol's drift crossed its 3σ line (:mod:`appliance.services.drift`)."""

    symbol: str
    group: str
    model_id: str  # whose reference the drift was measured against
    kl: float  # the aggregate
    line: float  # the 3σ line it crossed
    zscore: float
    features: list[str]  # the features that moved most
    run_id: str | None  # the early retrain queued (None in its group's cooldown or when off)
    ts: float  # market time


def _declared(enum: type[_Name], name: str, what: str) -> _Name:
    """``name`` as a member of ``enum``, or ValueError saying it is an undeclared ``what`` and
    where to declare it."""
    try:
        return enum(name)
    except ValueError:
        raise ValueError(f"undeclared {what} {name!r}; declare it in "
                         f"appliance/contracts.py (known: {', '.join(enum)})") from None


def event_kind(kind: str) -> Event:
    """``kind`` as a declared event kind, or ValueError naming the declared ones."""
    return _declared(Event, kind, "bus event kind")


def snapshot_name(name: str) -> Snapshot:
    """``name`` as a declared snapshot name, or ValueError naming the declared ones."""
    return _declared(Snapshot, name, "bus snapshot")


def command_name(command: str) -> Command:
    """``command`` as a declared operator command, or ValueError naming the declared ones."""
    return _declared(Command, command, "operator command")
