"""``methtrader``: the command line.

Every ``--json`` output is JSON alone on stdout; logs go to stderr and ``<state>/logs``.
Exit codes: 0 success, 1 runtime failure, 2 bad input (config, arguments).

While ``run`` is up it alone touches DuckDB; the other commands act through the bus.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from appliance.cli_common import emit as _emit, load_config, state_bus
from appliance.cli_parser import _parser
from appliance.cli_switches import cmd_unfreeze, set_maintenance
from appliance.config import Config, ConfigError, build_config, config_as_toml
from appliance.exchange.factory import StartupError
from appliance.parent_watch import exit_with_parent
from appliance.store import StoreError


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.logs import setup_logging
    from appliance.safety import prepare_state_dir
    from appliance.supervisor import RunLimits, run_sync

    from appliance.console import console_format, startup_summary

    cfg = load_config(args, speed=args.speed, metrics_port=args.metrics_port)
    prepare_state_dir(cfg.state_path)
    if args.exit_with_parent:
        exit_with_parent()
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
    from appliance.paths import StatePaths
    from appliance.safety import refuse_a_file
    from appliance.status import gather_status

    cfg = load_config(args)
    refuse_a_file(cfg.state_path)
    st = gather_status(cfg.state_path)
    lines = []
    age = st["heartbeat_age_s"]
    headline = "NOT RUNNING"
    if st["running"]:
        headline = "RUNNING" if st["health"] == "OK" else f"RUNNING — {st['health']}"
    ran = StatePaths(cfg.state_path).duckdb.exists()
    lines.append(headline + (
        f" (heartbeat {age:.1f}s ago, pid {st['pid']})" if age is not None else
        " (no heartbeat: it has not run since this state dir was restored or its bus "
        "rebuilt)" if ran else " (never started in this state dir)"))
    if st["market_time"]:
        lines.append(f"market time  {_fmt_ts(int(st['market_time'] * 1000))} UTC  "
                     f"exchange {st['exchange']}")
    lines.append(f"maintenance_mode {'ON' if st['maintenance_mode'] else 'off'}   "
                 f"deploys_frozen {'ON' if st['deploys_frozen'] else 'off'}")
    if st["maintenance_why"]:
        lines.append(f"  maintenance_mode {st['maintenance_why']}")
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
    if st["store_error"]:  # what the bus knows is printed; the damage is the error
        print(f"methtrader: {st['store_error']}; move it aside and `methtrader restore` a "
              "backup", file=sys.stderr)
        return 1
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from appliance.commands import UnknownModelId, registry_command
    from appliance.safety import require_state_dir

    cfg = load_config(args)
    require_state_dir(cfg.state_path)
    target = {"group": args.group} if args.command == "rollback" else {
        "model_id": args.model_id}
    try:
        result = registry_command(cfg, args.command, {**target, "reason": args.reason})
    except UnknownModelId as exc:  # bad input, as `report` of an unknown model
        print(f"methtrader: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 1
    moves = "; ".join(f"{t['model_id']} {t['from']} → {t['to']}"
                      for t in result.get("transitions", [])) or str(result)
    _emit(args, result, f"{args.command} {next(iter(target.values()))}: {moves}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from appliance.safety import refuse_a_file

    if args.file and args.config_file and args.file != args.config_file:
        raise ConfigError(f"config check: two files given ({args.file} and --config "
                          f"{args.config_file}); give one")
    cfg = build_config(args.file or args.config_file,
                       overrides={"general": {"state_dir": args.state_dir}})
    refuse_a_file(cfg.state_path)
    _emit(args, cfg.to_dict(), config_as_toml(cfg).rstrip())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    import inspect

    run = importlib.import_module(f"benchmarks.{args.suite}").run
    # per-suite options: given only when set, and only to a suite whose run() takes them
    options = {k: v for k, v in (("symbols", args.symbols), ("minutes", args.minutes),
                                 ("busy", args.busy), ("idle_ms", args.idle_ms),
                                 ("false_alarms", args.false_alarms),
                                 ("device", args.device)) if v is not None}
    refused = [k for k in options if k not in inspect.signature(run).parameters]
    if refused:
        raise ConfigError(f"bench {args.suite} takes no --{refused[0].replace('_', '-')}")
    from benchmarks._machine import machine, python_speed

    figures = {**run(**options), "machine": machine(),
               "host_python_m_loops_per_s": python_speed()}
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
    with state_bus(cfg) as bus:
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
    from chaos.runner import LANES, interrupt_on_sigterm, record, run_experiments

    unknown = [n for n in args.experiments if n not in EXPERIMENTS]
    if unknown:
        print(f"methtrader: unknown experiment(s) {', '.join(unknown)}; known: "
              f"{', '.join(EXPERIMENTS)} (see `methtrader chaos list`)", file=sys.stderr)
        return 2
    lanes = LANES if args.lanes is None else args.lanes
    interrupt_on_sigterm()
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
    from appliance.safety import refuse_a_file

    cfg = load_config(args)
    refuse_a_file(cfg.state_path)
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
    from appliance.commands import UnknownSymbols, backfill
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
    try:
        results = backfill(cfg, args.symbols, show_progress=not args.json)
    except UnknownSymbols as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 2
    _emit(args, results, "\n".join(
        f"{r['symbol']:<14} rows {r['rows']:>8}  missing {r['missing']:>6}  days written "
        f"{r['days_written']:>3} skipped {r['days_skipped']:>3}  sha256 {r['sha256'][:16]}"
        for r in results))
    return 0


def _require_lake(cfg: Config) -> None:
    """train, automl and distill read the lake: a state dir with none (a mistyped path, a
    file) is refused before their bus is created there."""
    from appliance.paths import StatePaths
    from appliance.safety import require_state_dir

    if not StatePaths(cfg.state_path).lake.is_dir():
        require_state_dir(cfg.state_path)


def cmd_train(args: argparse.Namespace) -> int:
    from appliance.commands import train_groups

    cfg = load_config(args)
    _require_lake(cfg)
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
    from appliance.automl import storage_url
    from appliance.automl_report import latest_report, render_report
    from appliance.commands import automl_groups
    from appliance.safety import refuse_a_file

    cfg = load_config(args)
    refuse_a_file(cfg.state_path)
    if args.report:
        try:
            report = latest_report(cfg.state_path, args.report, storage_url(cfg))
        except ValueError as exc:
            print(f"methtrader: {exc}", file=sys.stderr)
            return 2
        _emit(args, report, render_report(report))
        return 0
    if args.trials is not None and args.trials < 1:
        print("methtrader: --trials must be at least 1", file=sys.stderr)
        return 2
    _require_lake(cfg)

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


def cmd_distill(args: argparse.Namespace) -> int:
    from appliance.distill import distill_groups, progress_bar

    cfg = load_config(args)
    _require_lake(cfg)
    try:
        with progress_bar(show=not args.json) as progress:
            results = distill_groups(cfg, args.groups, progress=progress)
    except ValueError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 2
    _emit(args, results, "\n".join(
        f"{r['group']:<8} teacher {r['teacher']['model_id']} (1h lstm, wf score "
        f"{_num(r['teacher']['wf_score'])})  student {r['student']['model_id']} (5m ddqn, "
        f"wf score {_num(r['student']['wf_score'])}, agrees with the teacher "
        f"{_num(r['student']['teacher_agreement'], 3)}, trained on {r['student']['device']})"
        for r in results))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from appliance.config import build_config
    from appliance.worker import run_worker

    cfg = build_config(args.config, overrides={"jobs": {
        "backend": "redis", "redis_url": args.redis_url, "artifact_root": args.artifact_root,
        "workers": args.workers}})
    if not cfg.jobs.artifact_root:
        print("methtrader: worker needs --artifact-root (or jobs.artifact_root): this "
              "machine's mount of the appliance's artifact root", file=sys.stderr)
        return 2
    try:
        return run_worker(cfg.jobs.redis_url, cfg.artifact_path, cfg.jobs.workers,
                          args.log_format)
    except ConnectionError as exc:
        print(f"methtrader: {exc}", file=sys.stderr)
        return 1


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cmd_models(args: argparse.Namespace) -> int:
    from appliance.commands import list_registry
    from appliance.safety import require_state_dir

    cfg = load_config(args)
    require_state_dir(cfg.state_path)  # a mistyped path is named, never made
    models = list_registry(cfg)
    if args.check:
        from appliance.lifecycle import file_problems, registry_problems

        problems = registry_problems(models) + file_problems(models)
        _emit(args, {"models": len(models), "problems": problems}, "\n".join(
            problems or [f"registry OK: {len(models)} models, at most one prod per group, "
                         "every model that can trade has its registered file"]))
        return 1 if problems else 0
    keys = ("model_id", "run_id", "parent_run_id", "group", "symbols", "timeframe", "kind",
            "mode", "mode_since", "onnx_path", "onnx_sha256", "tags", "metrics", "live",
            "pinned", "created", "device")
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
                     f"{live.get('trades', '—')!s:>6}"
                     + (f"  (student of run {m['parent_run_id']})" if m["parent_run_id"]
                        else ""))
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
    from appliance.exchange.fake_bybit_app import check_warm_days

    try:
        faults = faults_from_args(args)
        check_warm_days(args.pairs, args.warm_days)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.exit_with_parent:
        exit_with_parent()
    run_fake_bybit(args.port, args.seed, faults, {args.api_key: args.api_secret},
                   host=args.host, limits=FakeLimits(ip_limit=args.ip_limit), pairs=args.pairs,
                   warm_days=args.warm_days)
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
    "distill": cmd_distill,
    "worker": cmd_worker,
    "models": cmd_models,
    "report": cmd_report,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "tui": cmd_tui,
    "run": cmd_run,
    "status": cmd_status,
    "kill": lambda a: set_maintenance(a, True),
    "resume": lambda a: set_maintenance(a, False),
    "config": cmd_config,
    "bench": cmd_bench,
    "chaos": cmd_chaos,
    "doctor": cmd_doctor,
    "drift": cmd_drift,
}


# Commands that create files in the state dir: their files are the operator's alone.
CREATES_STATE = {"run", "kill", "resume", "unfreeze", "promote", "demote", "pin", "unpin",
                 "rollback", "backfill", "train", "tui", "discover", "status", "models",
                 "report", "backup", "restore", "drift", "automl", "distill"}


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
        if getattr(exc, "fatal", False):  # says itself what to check (a refused API key)
            return 1, str(exc)
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
