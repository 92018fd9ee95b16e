"""``methtrader``: the command line.

Every ``--json`` output is JSON alone on stdout; logs go to stderr and ``<state>/logs``.
Exit codes: 0 success, 1 runtime failure, 2 bad input (config, arguments).

While ``run`` is up it alone touches DuckDB; the other commands act through the bus.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from appliance.config import Config, ConfigError, build_config, config_as_toml
from appliance.contracts import Command
from appliance.paths import StatePaths
from appliance.schedule import duration_s
from appliance.store import StoreError
from appliance.exchange.factory import StartupError

def parse_duration(text: str) -> float:
    try:
        return duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _lanes(text: str) -> int:
    """``chaos run --lanes``: a whole number of experiments at once, 1..8."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= n <= 8:
        raise argparse.ArgumentTypeError(f"{n} is not in 1..8")
    return n


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", help="state directory (default ~/.local/state/methtrader; "
                   "env METHTRADER_STATE_DIR)")
    p.add_argument("--config", help="TOML config file")


def _add_exchange(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exchange", choices=("sim", "replay", "bybit"),
                   help="the market (default sim: no network, no keys)")
    p.add_argument("--base-url", help="bybit: API host, e.g. http://127.0.0.1:PORT for "
                   "methtrader fake-bybit")
    p.add_argument("--replay-folder", help="replay: folder of candle files")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="methtrader", description="methtrader: an autonomous "
                                 "trading appliance for Bybit USDT perpetuals (default: the "
                                 "simulated market, no network, no keys)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the appliance (default: the simulated market)")
    _add_common(p)
    _add_exchange(p)
    p.add_argument("--speed", type=float, help="virtual seconds per real second (sim; "
                   "default 60)")
    p.add_argument("--for", dest="for_", type=parse_duration, metavar="DURATION",
                   help="stop cleanly after this much real time, e.g. 90s")
    p.add_argument("--until", type=parse_duration, metavar="DURATION",
                   help="stop cleanly once this much market time has passed, e.g. 14d")
    p.add_argument("--log-format", choices=("auto", "text", "colour", "json"), default="auto",
                   help="stderr: auto = coloured text on a terminal, JSON lines otherwise; "
                   "the log file is always JSON lines")
    p.add_argument("--metrics-port", type=int, help="Prometheus port on 127.0.0.1 "
                   "(default 9108; 0 disables)")

    p = sub.add_parser("status", help="what the appliance is doing (running or not)")
    _add_common(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("kill", help="kill switch: set maintenance_mode (no new orders)")
    _add_common(p)
    p.add_argument("--reason", default="operator kill switch")
    p.add_argument("--flatten", action="store_true",
                   help="also close every position with reduce-only orders")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("unfreeze", help="clear deploys_frozen (set by the drawdown guard)")
    _add_common(p)
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")

    for name, what in (("promote", "make a model prod (retires the group's prod model)"),
                       ("demote", "take a prod model out of service (retired) or end a "
                                  "shadow (rejected)"),
                       ("pin", "keep a prod model from being replaced or archived"),
                       ("unpin", "let a pinned prod model be replaced again")):
        p = sub.add_parser(name, help=what)
        _add_common(p)
        p.add_argument("model_id")
        p.add_argument("--reason", required=name in ("promote", "demote"),
                       default="operator")
        p.add_argument("--json", action="store_true")

    p = sub.add_parser("rollback", help="make a group's previous prod model prod again")
    _add_common(p)
    p.add_argument("group")
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("resume", help="clear maintenance_mode")
    _add_common(p)
    p.add_argument("--reason", default="operator resume")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("discover", help="run pair discovery once and print the table")
    _add_common(p)
    _add_exchange(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("backfill", help="backfill candle history into the lake")
    _add_common(p)
    _add_exchange(p)
    p.add_argument("symbols", nargs="*", metavar="SYMBOL",
                   help="default: the tradable set (discovered first when none is known)")
    p.add_argument("--days", type=int, default=None, help="days of history (default 90)")
    p.add_argument("--interval", default="1m",
                   help="only 1m is fetched; 5m and 1h are derived from it")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train the symbol groups once, in the foreground")
    _add_common(p)
    p.add_argument("groups", nargs="*", metavar="GROUP", help="default: every group")
    p.add_argument("--kind", choices=("rf", "mlp", "lstm", "ensemble"),
                   help="default: training.kinds of the config")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("automl", help="run an AutoML study per group in the foreground (trials "
                       "in-process); --report GROUP prints a study's parameter importances")
    _add_common(p)
    p.add_argument("groups", nargs="*", metavar="GROUP", help="default: every group")
    p.add_argument("--trials", type=int, help="trials per study (default automl.trials)")
    p.add_argument("--timeout", type=parse_duration, metavar="DURATION",
                   help="wall time per study, e.g. 30m (default automl.timeout)")
    p.add_argument("--report", metavar="GROUP",
                   help="the group's latest study: fANOVA importances and its best trials")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="the model registry")
    _add_common(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="why a model holds its mode: walk-forward folds, costs "
                       "per symbol, validation vs shadow vs prod (text, or --html with plots)")
    _add_common(p)
    p.add_argument("model_id", metavar="MODEL_ID")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with "
                   "each book's equity and drawdown plots")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("backup", help="a consistent copy of the state dir (also while run is "
                       "up), with a MANIFEST.json of sha256s")
    _add_common(p)
    p.add_argument("dest", metavar="DEST", help="a new (or empty) folder")
    p.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for a running appliance to copy its database")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("restore", help="put a backup back as the state dir (checks sha256s "
                       "first; run must be stopped)")
    _add_common(p)
    p.add_argument("src", metavar="SRC", help="a folder made by methtrader backup")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("fake-bybit", help="a loopback Bybit v5 server backed by the sim market")
    from appliance.exchange.fake_bybit import add_fake_bybit_args

    add_fake_bybit_args(p)

    p = sub.add_parser("tui", help="mission control (Textual) for a running appliance")
    _add_common(p)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("check", help="validate a config and print the effective config")
    c.add_argument("file", nargs="?", help="TOML file (default: none, i.e. the defaults)")
    c.add_argument("--state-dir")
    c.add_argument("--json", action="store_true")

    p = sub.add_parser("chaos", help="break a scratch appliance on purpose and measure "
                       "its recovery (MTTR)")
    csub = p.add_subparsers(dest="chaos_command", required=True, metavar="SUBCOMMAND")
    csub.add_parser("list", help="the experiments and their hypotheses")
    c = csub.add_parser("run", help="run experiments (default: all) in a scratch state dir; "
                        "exit 1 when a hypothesis failed")
    c.add_argument("experiments", nargs="*", metavar="EXPERIMENT")
    c.add_argument("--seed", type=int, default=0, help="seed of the random moments "
                   "(process-kill runs seeds S..S+4)")
    c.add_argument("--lanes", type=_lanes, default=None, metavar="N",
                   help="experiments at once, each in its own scratch appliance (default: 3; "
                   "1 runs them one after another, as `bench chaos` does)")
    c.add_argument("--state-dir", help="record the results as incidents of this appliance "
                   "(default: the default state dir, when it holds one)")
    c.add_argument("--json", action="store_true")

    p = sub.add_parser("doctor", help="check this install can run the appliance; says what "
                       "to fix (exit 1 when run could not work)")
    _add_common(p)
    _add_exchange(p)
    p.add_argument("--metrics-port", type=int, help="the port run would serve metrics on")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("drift", help="feature drift per symbol: KL vs the training reference "
                       "and the 3σ verdict (works while run runs)")
    _add_common(p)
    p.add_argument("symbols", nargs="*", metavar="SYMBOL", help="default: every symbol")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="performance figures (never asserted by tests)")
    p.add_argument("suite", choices=("supervisor", "backtest", "backfill", "inference",
                                     "train", "tui", "trading", "features", "honesty",
                                     "chaos", "drift", "automl"))
    p.add_argument("--symbols", type=int, default=None, metavar="N",
                   help="trading: trade N symbols (the most traded of a 400-pair sim universe)")
    p.add_argument("--false-alarms", action="store_true", default=None,
                   help="drift only: the 3σ rule over 30 stationary sim days and their shocked "
                        "twins for 12 symbol/seed pairs (hours fired, detection delay; ~2 min)")
    p.add_argument("--json", action="store_true")
    return ap


def load_config(args: argparse.Namespace, **general: Any) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        "general": {"state_dir": getattr(args, "state_dir", None),
                    "exchange": getattr(args, "exchange", None), **general},
        "bybit": {"base_url": getattr(args, "base_url", None)},
        "replay": {"folder": getattr(args, "replay_folder", None)},
    }
    return build_config(getattr(args, "config", None), overrides=overrides)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    try:
        if getattr(args, "json", False):
            print(json.dumps(data, default=str))
        else:
            print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `methtrader status | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.logs import setup_logging
    from appliance.safety import prepare_state_dir
    from appliance.supervisor import RunLimits, run_sync

    from appliance.console import console_format, startup_summary

    cfg = load_config(args, speed=args.speed, metrics_port=args.metrics_port)
    prepare_state_dir(cfg.state_path)
    console = console_format(args.log_format, sys.stderr)
    setup_logging(cfg.state_path, cfg.general.log_level, console=console)
    if console != "json":
        print(startup_summary(cfg, for_s=args.for_, until_s=args.until), file=sys.stderr,
              flush=True)
    return run_sync(cfg, RunLimits(for_s=args.for_, until_s=args.until))


def _fmt_ts(ms: int | None) -> str:
    if ms is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def cmd_status(args: argparse.Namespace) -> int:
    from appliance.status import gather_status

    cfg = load_config(args)
    st = gather_status(cfg.state_path)
    lines = []
    age = st["heartbeat_age_s"]
    headline = "NOT RUNNING"
    if st["running"]:
        headline = "RUNNING" if st["health"] == "OK" else f"RUNNING — {st['health']}"
    lines.append(headline + (
        f" (heartbeat {age:.1f}s ago, pid {st['pid']})" if age is not None else
        " (never started in this state dir)"))
    if st["market_time"]:
        lines.append(f"market time  {_fmt_ts(int(st['market_time'] * 1000))} UTC  "
                     f"exchange {st['exchange']}")
    lines.append(f"maintenance_mode {'ON' if st['maintenance_mode'] else 'off'}   "
                 f"deploys_frozen {'ON' if st['deploys_frozen'] else 'off'}")
    for name, s in sorted(st["services"].items()):
        err = f"  last error: {s['last_error']}" if s.get("last_error") else ""
        lines.append(f"  {name:<12} {s['state']:<9} restarts {s['restarts']}{err}")
    lines.append(f"candles {st['candles']} in {len(st['symbols'])} symbols")
    for sym in st["symbols"]:
        lines.append(f"  {sym:<12} latest {_fmt_ts(st['latest'].get(sym))}")
    m = st["models"]
    lines.append(f"models prod {m['prod']} shadow {m['shadow']} candidate {m['candidate']} "
                 f"retired {m['retired']} rejected {m['rejected']} archived {m['archived']}   "
                 f"trades {st['trades']}   equity {st['equity']:.2f}")
    _emit(args, st, "\n".join(lines))
    return 0


def _state_bus(cfg: Config):
    """The bus of an existing state dir (refusing any other directory)."""
    from appliance.bus import Bus
    from appliance.safety import require_state_dir

    require_state_dir(cfg.state_path)
    return Bus(StatePaths(cfg.state_path).bus, events_maxlen=cfg.bus.events_maxlen,
               command_deadline_s=cfg.bus.command_deadline_s)


def _set_maintenance(args: argparse.Namespace, value: bool) -> int:
    """kill (``value``) or resume. A kill still works on a damaged bus (a kill file); a resume
    also cancels a pending flatten; ``kill --flatten`` waits for the flatten while ``run`` is
    up, and queues it for the next start while it is down."""
    from appliance.bus import MAINTENANCE_MODE, BusError, operator_name

    cfg = load_config(args)
    flatten = getattr(args, "flatten", False)
    try:
        bus = _state_bus(cfg)
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
    with _state_bus(cfg) as bus:
        entry = bus.set_switch(DEPLOYS_FROZEN, False, actor=operator_name(),
                               reason=args.reason, source="cli")
    _emit(args, {"deploys_frozen": False, "audit": entry},
          f"deploys_frozen off (by {entry['actor']}: {entry['reason']})")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from appliance.commands import registry_command
    from appliance.safety import require_state_dir

    cfg = load_config(args)
    require_state_dir(cfg.state_path)
    target = {"group": args.group} if args.command == "rollback" else {
        "model_id": args.model_id}
    try:
        result = registry_command(cfg, args.command, {**target, "reason": args.reason})
    except RuntimeError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 1
    moves = "; ".join(f"{t['model_id']} {t['from']} → {t['to']}"
                      for t in result.get("transitions", [])) or str(result)
    _emit(args, result, f"{args.command} {next(iter(target.values()))}: {moves}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = build_config(args.file, overrides={"general": {"state_dir": args.state_dir}})
    _emit(args, cfg.to_dict(), config_as_toml(cfg).rstrip())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    import inspect

    run = importlib.import_module(f"benchmarks.{args.suite}").run
    # per-suite options: given only when set, and only to a suite whose run() takes them
    options = {k: v for k, v in (("symbols", args.symbols),
                                 ("false_alarms", args.false_alarms)) if v is not None}
    refused = [k for k in options if k not in inspect.signature(run).parameters]
    if refused:
        raise ConfigError(f"bench {args.suite} takes no --{refused[0].replace('_', '-')}")
    figures = run(**options)
    _emit(args, figures, "\n".join(f"{k:<32} {v}" for k, v in figures.items()))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from appliance.doctor import FAIL, diagnose, render

    findings = diagnose(load_config(args, metrics_port=args.metrics_port))
    _emit(args, [f.as_dict() for f in findings], render(findings))
    return 1 if any(f.status == FAIL for f in findings) else 0


def cmd_drift(args: argparse.Namespace) -> int:
    """The drift snapshot on the bus (never DuckDB: it works while `run` holds the file)."""
    from appliance.contracts import Snapshot
    from appliance.drift_view import NoDrift, format_drift, select

    cfg = load_config(args)
    with _state_bus(cfg) as bus:
        snapshot = bus.snapshot(Snapshot.DRIFT)
    try:
        view = select(snapshot, args.symbols)
    except NoDrift as exc:
        if args.json:
            _emit(args, {"error": str(exc)}, "")
        else:
            print(f"methtrader: {exc}", file=sys.stderr)
        return 1
    _emit(args, view, format_drift(view, detail=bool(args.symbols)))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from chaos.experiments import EXPERIMENTS

    w = max(len(name) for name in EXPERIMENTS)  # the name column
    if args.chaos_command == "list":
        rows = [{"experiment": e.name, "hypothesis": e.hypothesis, "injection": e.injection,
                 "target_mttr_s": e.target_mttr_s} for e in EXPERIMENTS.values()]
        _emit(args, rows, "\n".join(f"{r['experiment']:<{w}} {r['hypothesis']}\n"
                                     f"{'':<{w}} injects: {r['injection']}; MTTR target "
                                     f"< {r['target_mttr_s']:g}s" for r in rows))
        return 0
    from appliance.safety import is_state_dir
    from chaos.runner import LANES, record, run_experiments

    unknown = [n for n in args.experiments if n not in EXPERIMENTS]
    if unknown:
        print(f"methtrader: unknown experiment(s) {', '.join(unknown)}; known: "
              f"{', '.join(EXPERIMENTS)} (see `methtrader chaos list`)", file=sys.stderr)
        return 2
    lanes = LANES if args.lanes is None else args.lanes
    results = run_experiments(args.experiments or list(EXPERIMENTS), args.seed, lanes=lanes)
    target = load_config(args).state_path
    where = record(target, results) if is_state_dir(target) else None
    data = [{"experiment": r.experiment, "held": r.held, "mttr_s": r.mttr_s, "lost": r.lost,
             "lanes": lanes} for r in results]
    lines = [f"{'experiment':<{w}} {'seed':>4}  {'held':<5} {'MTTR':>8}  lost"]
    for r in results:
        mttr = "—" if r.mttr_s is None else f"{r.mttr_s:.2f}s"
        lines.append(f"{r.experiment:<{w}} {r.details.get('seed', ''):>4}  "
                     f"{'yes' if r.held else 'NO':<5} {mttr:>8}  {r.lost}")
        lines += [f"{'':<{w}} failed: {f}" for f in r.failures]
    lines.append(f"{len(results)} runs, at most {lanes} at once")
    if where:
        lines.append(f"results {where}")
    _emit(args, data, "\n".join(lines))
    return 0 if all(r.held for r in results) else 1


def cmd_discover(args: argparse.Namespace) -> int:
    from appliance.commands import discover
    from appliance.logs import setup_logging

    cfg = load_config(args)
    setup_logging(None, cfg.general.log_level)  # JSON lines on stderr, as every command's
    rows = discover(cfg)
    data = [{"symbol": r.symbol, "turnover24h": r.turnover_24h, "tradable": r.tradable,
             "status": r.status, "dropped_by": r.dropped_by} for r in rows]
    lines = [f"{'symbol':<14}{'24h turnover':>18}  tradable"]
    for r in rows:
        why = "yes" if r.tradable else f"no ({r.dropped_by})"
        lines.append(f"{r.symbol:<14}{r.turnover_24h:>18,.0f}  {why}")
    lines.append(f"{sum(r.tradable for r in rows)} tradable of {len(rows)} "
                 f"(bar: 24h turnover > {cfg.discovery.min_turnover_usd:,.0f})")
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from appliance.commands import backfill
    from appliance.logs import setup_logging

    if args.interval != "1m":
        raise ConfigError(f"--interval {args.interval}: only 1m is fetched; 5m and 1h are "
                          "derived from it in the lake")
    overrides = {} if args.days is None else {"days": args.days}
    cfg = load_config(args)
    setup_logging(None, cfg.general.log_level)
    if overrides:
        cfg = build_config(args.config, overrides={
            "general": {"state_dir": args.state_dir, "exchange": args.exchange},
            "bybit": {"base_url": args.base_url}, "replay": {"folder": args.replay_folder},
            "datasets": overrides})
    results = backfill(cfg, args.symbols, show_progress=not args.json)
    _emit(args, results, "\n".join(
        f"{r['symbol']:<14} rows {r['rows']:>8}  missing {r['missing']:>6}  days written "
        f"{r['days_written']:>3} skipped {r['days_skipped']:>3}  sha256 {r['sha256'][:16]}"
        for r in results))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from appliance.commands import train_groups

    cfg = load_config(args)
    kinds = [args.kind] if args.kind else [k for k in cfg.training.kinds.split(",") if k]
    try:
        results = train_groups(cfg, kinds, args.groups, show_progress=not args.json)
    except ValueError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 2
    _emit(args, results, "\n".join(
        f"{r['group']:<8} {r['kind']:<9} {r['timeframe']:<3} wf score "
        f"{r['metrics']['wf_score']:>7.2f} (mean {r['metrics']['wf_mean']:.2f} ± "
        f"{r['metrics']['wf_std']:.2f} over {len(r['metrics']['folds'])} folds)  "
        f"trades {r['metrics']['trades']:>5}  "
        f"{r['onnx_path']}" for r in results))
    return 0


def cmd_automl(args: argparse.Namespace) -> int:
    from appliance.automl_report import latest_report, render_report
    from appliance.commands import automl_groups

    cfg = load_config(args)
    if args.report:
        try:
            report = latest_report(cfg.state_path, args.report)
        except ValueError as exc:
            print(f"methtrader: {exc}", file=sys.stderr)
            return 2
        _emit(args, report, render_report(report))
        return 0
    if args.trials is not None and args.trials < 1:
        print("methtrader: --trials must be at least 1", file=sys.stderr)
        return 2

    def progress(p: dict[str, Any]) -> None:
        best = "-" if p["best"] is None else f"{p['best']:.2f}"
        value = "-" if p["value"] is None else f"{p['value']:.2f}"
        print(f"{p['group']} trial {p['trial']}/{p['trials']} {p['state']} {value}  "
              f"best {best}  pruned {p['pruned']}", file=sys.stderr, flush=True)

    try:
        results = automl_groups(cfg, args.groups, trials=args.trials, timeout_s=args.timeout,
                                progress=progress)
    except ValueError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 2
    _emit(args, results, "\n".join(
        f"{r['group']:<8} {r['trials']} trials ({r['pruned']} pruned)  wf score "
        f"{_num(r['wf_score'])}  hold-out Sharpe {_num(r['holdout_sharpe'])}  DSR "
        f"{_num(r['dsr'], 3)}  "
        + (f"registered {r['model_id']}" if r["model_id"] else f"none: {r['reason']}")
        for r in results))
    return 0


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cmd_models(args: argparse.Namespace) -> int:
    from appliance.commands import list_registry

    models = list_registry(load_config(args))
    keys = ("model_id", "run_id", "parent_run_id", "group", "symbols", "timeframe", "kind",
            "mode", "mode_since", "onnx_path", "onnx_sha256", "tags", "metrics", "live",
            "pinned", "created")
    data = [{k: m.get(k) for k in keys} for m in models]
    lines = [f"{'model':<40} {'group':<7} {'kind':<9} {'mode':<10} {'val sharpe':>10} "
             f"{'live sharpe':>11} {'live pnl':>10} {'trades':>6}"]

    def num(value: Any, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    for m in data:
        live = m["live"] or {}
        lines.append(f"{m['model_id']:<40} {m['group']:<7} {m['kind']:<9} {m['mode']:<10} "
                     f"{num((m['metrics'] or {}).get('sharpe')):>10} "
                     f"{num(live.get('sharpe')):>11} {num(live.get('pnl')):>10} "
                     f"{live.get('trades', '—')!s:>6}")
    _emit(args, data, "\n".join(lines) if data else "no models yet")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from appliance.commands import CommandFailed
    from appliance.report import (HTML_CURVE_POINTS, TEXT_CURVE_POINTS, UnknownModel,
                                  fetch_report, render_text)
    from appliance.safety import require_state_dir

    cfg = load_config(args)
    require_state_dir(cfg.state_path)
    path = Path(args.html).expanduser() if args.html else None
    if path is not None and not path.parent.is_dir():
        print(f"methtrader: --html {args.html}: the folder {path.parent} does not exist; "
              "create it or choose another file", file=sys.stderr)
        return 2
    try:
        report = fetch_report(cfg.state_path, args.model_id,
                              deadline_s=cfg.bus.command_deadline_s,
                              curve_points=HTML_CURVE_POINTS if path or args.json
                              else TEXT_CURVE_POINTS)
    except UnknownModel as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 2
    except CommandFailed as exc:
        print(f"methtrader: the appliance did not make the report: {exc}", file=sys.stderr)
        return 1
    text = render_text(report)
    if path is not None:
        from appliance.report_html import render_html

        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(render_html(report), encoding="utf-8")
        tmp.replace(path)
        text += f"\n\nHTML report with plots written to {path}"
    _emit(args, report, text)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from appliance.backup import BackupError, make_backup

    try:
        result = make_backup(load_config(args), Path(args.dest), wait_s=args.wait)
    except BackupError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return exc.code
    _emit(args, result, f"backup in {result['dest']}: {result['files']} files, "
          f"{result['bytes'] / 1e6:.1f} MB (database copied by {result['via']})")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from appliance.backup import BackupError, restore

    try:
        result = restore(load_config(args), Path(args.src))
    except BackupError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return exc.code
    aside = (f"\nthe previous state dir was moved aside to {result['moved_aside']}"
             if result["moved_aside"] else "")
    _emit(args, result, f"restored {result['files']} files from {result['from']} into "
          f"{result['restored']} (sha256s checked){aside}")
    return 0


def cmd_fake_bybit(args: argparse.Namespace) -> int:
    from appliance.exchange.fake_bybit import FakeLimits, faults_from_args, run_fake_bybit

    try:
        faults = faults_from_args(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    run_fake_bybit(args.port, args.seed, faults, {args.api_key: args.api_secret},
                   host=args.host, limits=FakeLimits(ip_limit=args.ip_limit), pairs=args.pairs)
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from appliance.safety import require_state_dir
    from tui.app import run_tui

    cfg = load_config(args)
    require_state_dir(cfg.state_path)
    return run_tui(cfg.state_path, events_maxlen=cfg.bus.events_maxlen,
                   command_deadline_s=cfg.bus.command_deadline_s)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "discover": cmd_discover,
    "unfreeze": cmd_unfreeze,
    "promote": cmd_registry,
    "demote": cmd_registry,
    "pin": cmd_registry,
    "unpin": cmd_registry,
    "rollback": cmd_registry,
    "backfill": cmd_backfill,
    "fake-bybit": cmd_fake_bybit,
    "train": cmd_train,
    "automl": cmd_automl,
    "models": cmd_models,
    "report": cmd_report,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "tui": cmd_tui,
    "run": cmd_run,
    "status": cmd_status,
    "kill": lambda a: _set_maintenance(a, True),
    "resume": lambda a: _set_maintenance(a, False),
    "config": cmd_config,
    "bench": cmd_bench,
    "chaos": cmd_chaos,
    "doctor": cmd_doctor,
    "drift": cmd_drift,
}


# Commands that create files in the state dir: their files are the operator's alone.
CREATES_STATE = {"run", "kill", "resume", "unfreeze", "promote", "demote", "pin", "unpin",
                 "rollback", "backfill", "train", "tui", "discover", "status", "models",
                 "report", "backup", "restore", "drift", "automl"}


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _expected_error(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an error a user can meet and act on; None for a bug."""
    import duckdb

    from appliance.bus import BusError
    from appliance.exchange.base import ExchangeError
    from appliance.liveness import AlreadyRunning
    from appliance.safety import StateDirError

    if isinstance(exc, ConfigError):
        return 2, f"config error: {exc}"
    if isinstance(exc, StateDirError):
        return 2, str(exc)
    if isinstance(exc, (StartupError, StoreError, AlreadyRunning)):
        return 1, str(exc)
    if isinstance(exc, BusError):
        return 1, (f"{exc}; `methtrader run` moves it aside and rebuilds it on its next start, "
                   "and `methtrader kill` still works")
    if isinstance(exc, ExchangeError):
        return 1, f"the exchange failed: {exc}; try again later"
    if isinstance(exc, duckdb.Error):
        return 1, (f"the DuckDB file cannot be used ({str(exc).splitlines()[0]}); move it "
                   "aside or restore a backup")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return 1, f"{exc.strerror or exc}{where}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in CREATES_STATE:
        os.umask(0o077)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        leaves = _leaves(exc)
        answers = [_expected_error(leaf) for leaf in leaves]
        if not leaves or any(a is None for a in answers):
            raise
        code = max(a[0] for a in answers)  # type: ignore[index]
        for line in dict.fromkeys(a[1] for a in answers):  # type: ignore[index]
            print(f"methtrader: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
