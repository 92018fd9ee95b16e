"""One-shot commands that talk to the exchange without a running appliance.

``discover`` prints the pair table; ``backfill`` fills the lake. Both build the same exchange
``run`` would (sim on the state dir's virtual time, replay, or bybit), and neither needs the
DuckDB file: a backfill registers its datasets there when it can, and otherwise leaves the
manifests in the lake for the appliance to register on its next pass.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import trio

from appliance.backfill import backfill_funding, backfill_symbol
from appliance.bus import Bus
from appliance.clock import floor_minute_ms, now_ms
from appliance.config import Config
from appliance.contracts import Snapshot
from appliance.exchange.base import Exchange
from appliance.exchange.factory import make_clock, make_exchange
from appliance.pairlist import PairRow
from appliance.paths import OutsideStateDir, StatePaths
from appliance.services.discovery import discover_once
from appliance.store import Store, StoreError
from data.lake import DAY_MS, Lake


async def _with_exchange(cfg: Config, fn):
    clock = make_clock(cfg)
    exchange = make_exchange(cfg, clock)
    try:
        return await fn(exchange, clock)
    finally:
        await exchange.aclose()


def discover(cfg: Config) -> list[PairRow]:
    async def go(exchange: Exchange, clock) -> list[PairRow]:
        return await discover_once(exchange, cfg.discovery)

    return trio.run(_with_exchange, cfg, go)


class UnknownSymbols(ValueError):
    """Symbols named on the command line that the exchange does not list."""


def backfill(cfg: Config, symbols: list[str], *, show_progress: bool = True
             ) -> list[dict[str, Any]]:
    from appliance.safety import prepare_state_dir

    prepare_state_dir(cfg.state_path)
    lake = Lake(StatePaths(cfg.state_path).lake)

    async def go(exchange: Exchange, clock) -> list[dict[str, Any]]:
        wanted = list(symbols)
        if wanted:
            listed = {i.symbol for i in await exchange.instruments()}
            unknown = [s for s in wanted if s not in listed]
            if unknown:
                hint = [s.upper() for s in unknown if s.upper() in listed]
                raise UnknownSymbols(
                    f"backfill: {', '.join(unknown)} not listed on the {cfg.general.exchange} "
                    "exchange" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                    + "; `methtrader discover` lists its pairs")
        if not wanted:
            with Bus(StatePaths(cfg.state_path).bus) as bus:
                wanted = bus.tradable_pairs() or []
            if not wanted:
                rows = await discover_once(exchange, cfg.discovery)
                wanted = [r.symbol for r in rows if r.tradable]
        end = floor_minute_ms(now_ms(clock))  # fixed once: a re-run asks for the same range
        start = end - cfg.datasets.days * DAY_MS
        results = []
        with _progress(show_progress) as bar:
            for symbol in wanted:
                task = bar.add_task(symbol, total=None) if bar else None

                def report(sym: str, done: int, total: int, task=task) -> None:
                    if bar:
                        bar.update(task, completed=done, total=total)

                r = await backfill_symbol(exchange, lake, symbol, start, end, report)
                await trio.to_thread.run_sync(lake.resample, symbol)
                funding = await backfill_funding(exchange, lake, symbol, start, end)
                manifests = [m for iv in ("1m", "5m", "1h")
                             if (m := await trio.to_thread.run_sync(lake.manifest, symbol, iv))]
                m = manifests[0] if manifests else None
                if manifests and (fm := await trio.to_thread.run_sync(lake.funding_manifest,
                                                                      symbol)):
                    manifests.append(fm)
                for man in manifests:
                    await trio.to_thread.run_sync(lake.save_manifest, man)
                results.append({"symbol": symbol, "rows": m.rows if m else 0,
                                "missing": r.missing, "days_written": r.days_written,
                                "days_skipped": r.days_skipped, "funding_rows": funding,
                                "sha256": m.sha256 if m else "",
                                "start_time": m.start_time if m else None,
                                "end_time": m.end_time if m else None})
        _register(cfg, lake)
        return results

    return trio.run(_with_exchange, cfg, go)


def _register(cfg: Config, lake: Lake) -> bool:
    """Record the lake's manifests in DuckDB unless ``run`` holds it (it does that itself)."""
    try:
        store = Store(StatePaths(cfg.state_path).duckdb)
    except StoreError:
        return False
    try:
        for m in lake.manifests():
            store.save_dataset(m)
    finally:
        store.close()
    return True


class _progress:
    """A rich progress bar on stderr (so ``--json`` stdout stays clean), or nothing."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar = None

    def __enter__(self):
        if not self.show:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("{task.description:<14}"), BarColumn(),
                            MofNCompleteColumn(), console=Console(file=sys.stderr))
        self.bar.__enter__()
        return self.bar

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def train_groups(cfg: Config, kinds: list[str], group_names: list[str], *,
                 show_progress: bool = True) -> list[dict[str, Any]]:
    """``methtrader train``: one run per group and kind, in the foreground, on the lake."""
    import time as _time

    from appliance.services.training import groups_from_lake
    from models.groups import GroupingRules
    from appliance.lifecycle import register
    from models.training import run_kwargs, run_setup, train_run

    lake_root = StatePaths(cfg.state_path).lake
    with Bus(StatePaths(cfg.state_path).bus) as bus:
        tradable = bus.tradable_pairs()
    symbols = tradable if tradable else Lake(lake_root).symbols("5m")
    groups = groups_from_lake(lake_root, symbols,
                              GroupingRules(max_size=cfg.training.max_group_size))
    if group_names:
        unknown = sorted(set(group_names) - {g.name for g in groups})
        if unknown:
            raise ValueError(f"unknown group(s) {', '.join(unknown)}; groups of the lake: "
                             f"{', '.join(g.name for g in groups) or 'none (backfill first)'}")
        groups = [g for g in groups if g.name in group_names]
    if not groups:
        raise ValueError(f"no symbol in {lake_root} has a 5m dataset yet; run "
                         "`methtrader backfill` first")
    stamp = _time.strftime("%Y%m%d-%H%M%S", _time.gmtime())
    results = []
    with _progress(show_progress) as bar:
        for group in groups:
            for kind, timeframe in [(k, tf) for tf in cfg.training.timeframes.split(",")
                                    for k in kinds]:
                run_id = (f"manual-{stamp}-{group.name}-{kind}"
                          + ("" if timeframe == "5m" else f"-{timeframe}"))
                task = bar.add_task(f"{group.name} {kind}", total=100) if bar else None

                def progress(p: dict[str, Any], task=task) -> None:
                    if bar:
                        bar.update(task, completed=p["percent"])

                results.append(train_run(
                    cfg.state_path, run_id, group.name, list(group.symbols), kind,
                    tags={"trigger": "manual"}, progress=progress,
                    **run_kwargs(run_setup(timeframe, cfg.training.folds,
                                           cfg.trading.threshold, cfg.sim.taker_fee,
                                           cfg.sim.slippage_bps / 10_000,
                                           cfg.training.device))))
    try:
        store = Store(StatePaths(cfg.state_path).duckdb)
    except StoreError:
        return with_absolute_paths(cfg, results)  # run holds it; it registers the receipts
    try:
        with Bus(StatePaths(cfg.state_path).bus, events_maxlen=cfg.bus.events_maxlen) as bus:
            life = _offline_lifecycle(cfg, store, bus)
            for r in results:
                life.publish(register(store, r, now=_time.time(), actor="operator"))
    finally:
        store.close()
    return with_absolute_paths(cfg, results)


def with_absolute_paths(cfg: Config, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the operator: model paths (stored relative) made absolute, resolved against
    the state dir in use."""
    paths = StatePaths(cfg.state_path)

    def absolute(stored: str) -> str:
        try:
            return str(paths.resolve_stored(stored))
        except OutsideStateDir:
            return stored  # it names no file of this state dir: shown as stored

    return [{**row, "onnx_path": absolute(row["onnx_path"])} if row.get("onnx_path") else row
            for row in rows]


def _offline_lifecycle(cfg: Config, store: Store, bus: Bus):
    """The lifecycle's effects for a CLI that holds DuckDB itself (``run`` is down): events,
    the registry version on the bus and a bus notification (the webhook is ``run``'s job)."""
    from appliance.lifecycle import Lifecycle
    from appliance.notify import Notifier

    return Lifecycle(None, bus, Notifier(bus, None), cfg.state_path)


def list_registry(cfg: Config) -> list[dict[str, Any]]:
    """The registry with each model's ``live`` record (its current book), from DuckDB, or from
    the bus snapshots while ``run`` holds the file; model paths absolute, in the state dir in
    use."""
    from appliance.book_records import live_figures
    from models.registry import list_models

    paths = StatePaths(cfg.state_path)
    if paths.duckdb.exists():
        try:
            store = Store(paths.duckdb, read_only=True)
        except StoreError:
            store = None  # run holds the file: its bus snapshots are current
        if store is not None:
            try:
                return with_absolute_paths(cfg, [{**m, "live": live_figures(store, m)}
                                                 for m in list_models(store)])
            finally:
                store.close()
    with Bus(paths.bus) as bus:
        live = bus.snapshot(Snapshot.MODEL_LIVE) or {}
        return with_absolute_paths(cfg, [{**m, "live": live.get(m["model_id"])}
                                         for m in bus.snapshot(Snapshot.REGISTRY) or []])


class CommandFailed(RuntimeError):
    """An operator command did not run, or ran and failed; the message says which."""


class UnknownModelId(CommandFailed):
    """The command named a model the registry does not have (bad input: exit 2)."""


def send_and_wait(bus: Bus, command: str, args: dict[str, Any], *, deadline_s: float,
                  source: str = "cli", poll_s: float = 0.1) -> dict[str, Any]:
    """Queue a command for the running appliance and wait for its result up to its deadline.

    When the deadline passes unanswered the command is cancelled, so it never runs later and
    the failure reported is the truth; if ``run`` claimed it just before, this waits for its
    result a little longer instead."""
    import time as _time

    cid = bus.send_command(command, args, source=source, deadline_s=deadline_s)
    deadline = _time.monotonic() + deadline_s
    while _time.monotonic() < deadline:
        if (result := bus.command_result(cid)) is not None:
            return _checked(result)
        _time.sleep(poll_s)
    why = f"the appliance did not answer within {deadline_s:g}s"
    if bus.cancel_command(cid, reason=why):
        bus.audit(actor=args.get("actor") or "cli", action=f"command:{command} cancelled",
                  reason=why, details={"command_id": cid, "args": args})
        raise CommandFailed(f"{why}; the command was cancelled and will not run")
    grace = _time.monotonic() + min(30.0, deadline_s)
    while _time.monotonic() < grace:
        if (result := bus.command_result(cid)) is not None:
            return _checked(result)
        _time.sleep(poll_s)
    raise CommandFailed(f"{why}; it started at the last moment and has not finished: check "
                        "`methtrader status` and the audit log")


def _checked(result: dict[str, Any]) -> dict[str, Any]:
    if not result.get("ok"):
        error = str(result.get("error", "refused"))
        name, _, message = error.partition(": ")
        if name == "ModelNotFound":  # the running appliance's words for an unknown model id
            raise UnknownModelId(message)
        raise CommandFailed(error)
    return result


def registry_command(cfg: Config, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """promote/demote/rollback/pin/unpin: through ``run`` when it is up (it owns DuckDB),
    else applied to DuckDB here. Audited either way, with the operator's name and reason."""
    from appliance.bus import operator_name
    from appliance.lifecycle import delete_archived_files
    from appliance.liveness import is_running
    from appliance.operator_commands import REGISTRY_COMMANDS, summarize
    from models.registry import ModelNotFound, RegistryError

    args = {**args, "actor": operator_name(), "keep_retired": cfg.lifecycle.keep_retired}
    paths = StatePaths(cfg.state_path)
    with Bus(paths.bus, events_maxlen=cfg.bus.events_maxlen) as bus:
        if is_running(cfg.state_path):
            return send_and_wait(bus, command, args, deadline_s=cfg.bus.command_deadline_s)
        try:
            store = Store(paths.duckdb)
        except StoreError as exc:
            raise CommandFailed(str(exc)) from None
        try:
            result = REGISTRY_COMMANDS[command](store, args, _market_now(cfg))
            if isinstance(result, list):
                _offline_lifecycle(cfg, store, bus).publish(result)
                delete_archived_files(store, cfg.state_path)
        except ModelNotFound as exc:
            raise UnknownModelId(str(exc)) from None
        except RegistryError as exc:
            raise CommandFailed(str(exc)) from None
        finally:
            store.close()
        bus.audit(actor=args["actor"], action=f"command:{command}",
                  reason=args.get("reason", ""),
                  details={"args": args, "result": summarize(result), "source": "cli"})
        return {"ok": True, **summarize(result)}


def _market_now(cfg: Config) -> float:
    """Market time while ``run`` is down: the saved virtual clock in sim/replay, else now."""
    clock = make_clock(cfg)
    return clock.now()


def lake_groups(cfg: Config, group_names: list[str]) -> list[Any]:
    """The symbol groups of the lake (as ``run`` forms them), or those named; ValueError for an
    unknown name or an empty lake."""
    from appliance.services.training import groups_from_lake
    from models.groups import GroupingRules

    lake_root = StatePaths(cfg.state_path).lake
    with Bus(StatePaths(cfg.state_path).bus) as bus:
        tradable = bus.tradable_pairs()
    symbols = tradable if tradable else Lake(lake_root).symbols("5m")
    groups = groups_from_lake(lake_root, symbols,
                              GroupingRules(max_size=cfg.training.max_group_size))
    if group_names:
        unknown = sorted(set(group_names) - {g.name for g in groups})
        if unknown:
            raise ValueError(f"unknown group(s) {', '.join(unknown)}; groups of the lake: "
                             f"{', '.join(g.name for g in groups) or 'none (backfill first)'}")
        groups = [g for g in groups if g.name in group_names]
    if not groups:
        raise ValueError(f"no symbol in {lake_root} has a 5m dataset yet; run "
                         "`methtrader backfill` first")
    return groups


def automl_groups(cfg: Config, group_names: list[str], *, trials: int | None = None,
                  timeout_s: float | None = None,
                  progress: Callable[[dict[str, Any]], None] | None = None,
                  now: float | None = None) -> list[dict[str, Any]]:
    """``methtrader automl``: each group's study in the foreground, its trials in-process,
    and its winner registered (:func:`register_winners`). One summary per group."""
    import time as _time

    from appliance.automl import run_group_study

    now = _time.time() if now is None else now
    return register_winners(cfg, [
        run_group_study(cfg, group.name, list(group.symbols), now=now, trials=trials,
                        timeout_s=timeout_s, progress=progress)
        for group in lake_groups(cfg, group_names)])


def register_winners(cfg: Config, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Register the winners' runs as candidates through the lifecycle when ``run`` does not
    hold DuckDB (else ``run``'s training service registers their receipts); the summaries
    with ``model_id`` filled in and without the receipts."""
    import time as _time

    from appliance.lifecycle import register
    from models.registry import model_id_of

    receipts = [s for s in summaries if s.get("receipt")]
    if receipts:
        try:
            store = Store(StatePaths(cfg.state_path).duckdb)
        except StoreError:
            store = None  # run holds it; its training service registers the receipts
        if store is not None:
            try:
                with Bus(StatePaths(cfg.state_path).bus,
                         events_maxlen=cfg.bus.events_maxlen) as bus:
                    life = _offline_lifecycle(cfg, store, bus)
                    for s in receipts:
                        life.publish(register(store, s["receipt"], now=_time.time(),
                                              actor="automl"))
            finally:
                store.close()
    for s in receipts:
        s["model_id"] = model_id_of(s["run_id"])
    return [{k: v for k, v in s.items() if k != "receipt"} for s in summaries]
