"""The ``methtrader`` argument parser: every command, its flags and its help text.

Kept apart from the commands themselves so that ``methtrader --help`` reads as one table and a
command's code stays next to its siblings in ``appliance/cli.py``.
"""

from __future__ import annotations

import argparse
import math
import re

from appliance.schedule import duration_s

# Python 3.11's argparse takes "-5" and "-.5" for values but "-5s" for an unknown option, so
# `--for -5s` was "expected one argument"; as newer Pythons' argparse does, anything from "-"
# and a digit is a value here, and the flag's own check names what is wrong with it.
NEGATIVE_VALUE = re.compile(r"-\.?\d")


def parse_duration(text: str) -> float:
    try:
        return duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    """``backup --wait``: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, 0 or more")
    return value


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


def _add_exit_with_parent(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop cleanly (as on SIGTERM) once the process that started this one "
                   "is gone (for harnesses and supervisors that may be killed)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="methtrader", description="methtrader: an autonomous "
                                 "trading appliance for Bybit USDT perpetuals (default: the "
                                 "simulated market, no network, no keys)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the appliance (default: the simulated market)")
    p._negative_number_matcher = NEGATIVE_VALUE
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
    _add_exit_with_parent(p)

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
    p._negative_number_matcher = NEGATIVE_VALUE
    _add_common(p)
    p.add_argument("groups", nargs="*", metavar="GROUP", help="default: every group")
    p.add_argument("--trials", type=int, help="trials per study (default automl.trials)")
    p.add_argument("--timeout", type=parse_duration, metavar="DURATION",
                   help="wall time per study, e.g. 30m (default automl.timeout)")
    p.add_argument("--report", metavar="GROUP",
                   help="the group's latest study: fANOVA importances and its best trials")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("distill", help="distil each group once, in the foreground: a 1h lstm "
                       "teacher, then a 5m ddqn student that learns from it (layer 8)")
    _add_common(p)
    p.add_argument("groups", nargs="*", metavar="GROUP", help="default: every group")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("worker", help="consume the appliance's Redis job queue on this "
                       "machine (jobs.backend = redis); Ctrl-C stops it after running jobs")
    p.add_argument("--config", help="TOML config file ([jobs] redis_url, artifact_root, "
                   "workers)")
    p.add_argument("--redis-url", help="the queue, e.g. redis://10.0.0.5:6379/0 (default "
                   "jobs.redis_url; a password is better kept in METHTRADER__JOBS__REDIS_URL "
                   "than on a command line)")
    p.add_argument("--artifact-root", help="this machine's mount of the appliance's "
                   "jobs.artifact_root (holds lake/ and artifacts/)")
    p.add_argument("--workers", type=int, help="worker processes (default jobs.workers)")
    p.add_argument("--log-format", choices=("text", "colour", "json"), default="text")

    p = sub.add_parser("models", help="the model registry")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--check", action="store_true",
                   help="check the registry instead of listing it: one prod per group at most, "
                   "known modes, and every model that can still trade has its registered file "
                   "(exit 1 on any problem)")

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
    p.add_argument("--wait", type=_seconds, default=300.0, metavar="SECONDS",
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
    _add_exit_with_parent(p)

    p = sub.add_parser("tui", help="mission control (Textual) for a running appliance")
    _add_common(p)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("check", help="validate a config and print the effective config")
    c.add_argument("file", nargs="?", help="TOML file (default: none, i.e. the defaults)")
    c.add_argument("--config", dest="config_file", metavar="FILE",
                   help="the TOML file, as the other commands take it")
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
                                     "chaos", "drift", "automl", "distill", "workers",
                                     "e2e"))
    p.add_argument("--symbols", type=int, default=None, metavar="N",
                   help="trading: trade N symbols (the most traded of a 400-pair sim universe); "
                        "e2e: run the appliance with N traded symbols (default 24)")
    p.add_argument("--minutes", type=int, default=None, metavar="M",
                   help="e2e only: market minutes the appliance runs (default 240, at speed "
                        "120; the run is cut at 7 minutes of real time)")
    p.add_argument("--busy", type=int, default=None, metavar="N",
                   help="trading: with N training processes running meanwhile, at the job "
                        "consumer's niceness (jobs.niceness)")
    p.add_argument("--idle-ms", type=int, default=None, metavar="MS",
                   help="trading only: the engine idles MS milliseconds after recording each "
                        "bar, as between bars minutes apart (caches go cold; default 0)")
    p.add_argument("--false-alarms", action="store_true", default=None,
                   help="drift only: the 3σ rule over 30 stationary sim days and their shocked "
                        "twins for 12 symbol/seed pairs (hours fired, detection delay; ~2 min)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="train and distill: where torch trains (default cpu for train, "
                        "training.device's default auto for distill)")
    p.add_argument("--json", action="store_true")
    return ap
