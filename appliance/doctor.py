"""``methtrader doctor``: is this install able to run the appliance, and what to fix if not.

Each check answers with a :class:`Finding`: ``ok``, ``warn`` (works, but worth knowing: no GPU,
no clock sync reported, a loose permission) or ``fail`` (``run`` could not work: a package
missing, the state dir unwritable, the metrics port taken by something else, a configured
exchange that does not answer). The exit code is 1 when any check fails, else 0 — a machine
with no GPU, no network and a fresh state dir is a healthy one for the default sim market.

Nothing here changes the state dir: it is probed, never created. The state files ``run`` opens
(the DuckDB file, the SQLite job queue, the virtual clock) are read as ``run`` reads them, so a
damaged one fails here with ``run``'s own words; while ``run`` holds the state dir they are left
alone (it opened them, and a second open of its DuckDB file would be refused anyway).
"""

from __future__ import annotations

import errno
import importlib
from importlib import metadata
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from appliance.config import Config
from appliance.paths import StatePaths

OK, WARN, FAIL = "ok", "warn", "fail"
#: what `run` imports; the name users know first, the module second
PACKAGES: tuple[tuple[str, str], ...] = (
    ("trio", "trio"), ("httpx", "httpx"), ("duckdb", "duckdb"), ("pyarrow", "pyarrow"),
    ("diskcache", "diskcache"), ("huey", "huey"), ("onnxruntime", "onnxruntime"),
    ("torch", "torch"), ("scikit-learn", "sklearn"), ("optuna", "optuna"),
    ("textual", "textual"), ("prometheus-client", "prometheus_client"), ("pybit", "pybit"),
    ("numpy", "numpy"), ("scipy", "scipy"))
#: below this much free space a backfill cannot finish a day's files
MIN_FREE_BYTES = 1 << 30
FULL_RATIO = 0.80  # the disk guard's default threshold (training.disk_threshold)
#: a DuckDB file starts with its main header and two database headers, 4 KiB each; its blocks
#: follow
DUCKDB_HEADERS = 3 * 4096
#: a state file while `run` holds the state dir: it opened the file, doctor leaves it alone
HELD = "held by the running appliance (not opened while it runs)"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def check_python() -> Finding:
    v = sys.version_info
    found = f"Python {v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) < (3, 11):
        return Finding("python", FAIL, found, "install Python 3.11 and re-run install.sh")
    return Finding("python", OK, found)


def check_packages() -> list[Finding]:
    out = []
    for name, module in PACKAGES:
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # an import can fail in many ways (missing .so, ABI)
            out.append(Finding(f"package {name}", FAIL, f"cannot import {module}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                               "re-run ./install.sh (it installs every dependency)"))
            continue
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = getattr(mod, "__version__", "installed")
        out.append(Finding(f"package {name}", OK, version))
    return out


def check_onnx_and_gpu() -> list[Finding]:
    out = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        status = OK if "CPUExecutionProvider" in providers else FAIL
        out.append(Finding("onnxruntime providers", status, ", ".join(providers),
                           "" if status == OK else "reinstall onnxruntime (./install.sh)"))
    except Exception as exc:
        out.append(Finding("onnxruntime providers", FAIL, f"{type(exc).__name__}: {exc}",
                           "re-run ./install.sh"))
    try:
        import torch

        if torch.cuda.is_available():
            out.append(Finding("gpu", OK, f"CUDA: {torch.cuda.get_device_name(0)}"))
        else:
            out.append(Finding("gpu", WARN, "no GPU seen; training runs on the CPU",
                               "nothing to do unless you expected one (then check the "
                               "driver and install.sh --gpu)"))
    except Exception as exc:
        out.append(Finding("gpu", WARN, f"torch could not look for one: {exc}"))
    return out


def _existing_parent(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_state_dir(state_dir: Path) -> list[Finding]:
    """The state dir (or, for a fresh one, the folder it would be created in): a writable
    directory, private to its owner, on a disk with room."""
    out = []
    if state_dir.exists() and not state_dir.is_dir():
        return [Finding("state dir", FAIL, f"{state_dir} is not a directory",
                        "choose another --state-dir")]
    where = state_dir if state_dir.exists() else _existing_parent(state_dir)
    if not where.is_dir():
        return [Finding("state dir", FAIL, f"{state_dir}: {where} is not a directory",
                        "choose another --state-dir")]
    writable = os.access(where, os.W_OK | os.X_OK)
    what = f"{state_dir}" + ("" if state_dir.exists() else f" (new; would be created in {where})")
    if not writable:
        out.append(Finding("state dir", FAIL, f"{what} cannot be written by uid {os.getuid()}",
                           "fix its permissions or choose another --state-dir"))
    else:
        out.append(Finding("state dir", OK, what))
    if state_dir.exists():
        mode = stat.S_IMODE(state_dir.stat().st_mode)
        if mode & 0o077:
            out.append(Finding("state dir permissions", WARN, f"mode {mode:o}: other local "
                               "users can read positions, trades and the audit log",
                               f"chmod 700 {state_dir}"))
        else:
            out.append(Finding("state dir permissions", OK, f"mode {mode:o}"))
    usage = shutil.disk_usage(where)
    used = 1 - usage.free / usage.total if usage.total else 1.0
    detail = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB ({used:.0%} used)"
    if usage.free < MIN_FREE_BYTES:
        out.append(Finding("disk", FAIL, detail, "free space on that filesystem or choose "
                           "another --state-dir"))
    elif used > FULL_RATIO:
        out.append(Finding("disk", WARN, detail, "the disk guard trims models and old lake days "
                           f"above {FULL_RATIO:.0%}; free space"))
    else:
        out.append(Finding("disk", OK, detail))
    return out


def check_clock(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Finding:
    """NTP sync as systemd reports it. Bybit rejects requests signed more than its recv
    window (5 s) off, so a drifting clock breaks live trading; sim does not care."""
    if shutil.which("timedatectl") is None:
        return Finding("clock sync", WARN, "cannot tell (no timedatectl)",
                       "make sure NTP (chrony or systemd-timesyncd) runs before live trading")
    try:
        res = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                  capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        return Finding("clock sync", WARN, f"cannot tell ({exc})",
                       "make sure NTP runs before live trading")
    answer = res.stdout.strip()
    if answer == "yes":
        return Finding("clock sync", OK, "NTP synchronised")
    said = (answer or res.stderr.strip() or "no answer").splitlines()[0]
    return Finding("clock sync", WARN, f"NTP not reported synchronised ({said})",
                   "enable NTP (timedatectl set-ntp true) before live trading")


def check_metrics_port(port: int, state_dir: Path) -> Finding:
    from appliance.liveness import is_running

    if port == 0:
        return Finding("metrics port", OK, "disabled (metrics_port = 0)")
    if state_dir.is_dir() and is_running(state_dir):
        return Finding("metrics port", OK, f"127.0.0.1:{port} not tested: the appliance is "
                       "running on this state dir (with the port it was started with)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return Finding("metrics port", FAIL, f"127.0.0.1:{port} is in use (an appliance "
                           "already running, or another program)",
                           "stop it, or set general.metrics_port / --metrics-port")
    return Finding("metrics port", OK, f"127.0.0.1:{port} is free")


def check_exchange(cfg: Config) -> Finding:
    exchange = cfg.general.exchange
    if exchange == "sim":
        return Finding("exchange", OK, "sim: the simulated market (no network, no keys)")
    if exchange == "replay":
        folder = Path(cfg.replay.folder) if cfg.replay.folder else None
        if folder is None or not folder.is_dir():
            return Finding("exchange", FAIL, f"replay folder {folder} is not a folder",
                           "set replay.folder / --replay-folder to a folder of candle files")
        return Finding("exchange", OK, f"replay from {folder}")
    import httpx

    from appliance.exchange.bybit import HOSTS

    host = cfg.bybit.base_url or HOSTS[cfg.bybit.network]
    try:
        r = httpx.get(host.rstrip("/") + "/v5/market/time", timeout=5.0)
        r.raise_for_status()
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        return Finding("exchange", FAIL, f"bybit at {host} did not answer "
                       f"({type(exc).__name__}: {exc})",
                       "check the network and bybit.base_url, or run the sim market")
    if not isinstance(body, dict) or body.get("retCode") != 0:
        code = body.get("retCode") if isinstance(body, dict) else None
        return Finding("exchange", FAIL, f"bybit at {host} answered retCode {code}",
                       "check bybit.network / bybit.base_url")
    return Finding("exchange", OK, f"bybit at {host} answered")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _running(state_dir: Path) -> bool:
    from appliance.liveness import is_running

    return state_dir.is_dir() and is_running(state_dir)


def check_database(state_dir: Path) -> Finding:
    """The DuckDB file, opened read-only as ``run`` opens it (same connect, same schema
    query) plus one O(1) look at its size: a file cut short still opens, and ``run`` then
    stops at the first block it cannot read. Never a scan: this stays fast on any size."""
    path = StatePaths(state_dir).duckdb
    if _running(state_dir):
        return Finding("database", OK, f"{path}: {HELD}")
    if not path.exists():
        return Finding("database", OK, f"{path}: none yet (run creates it)")
    try:
        import duckdb

        from appliance.startup import DUCKDB_FIX, unusable_duckdb
        from appliance.store import SCHEMA_VERSION, StoreError, connect, schema_version
    except ImportError as exc:
        return Finding("database", WARN, f"{path} not checked ({_first_line(exc)})",
                       "re-run ./install.sh")
    try:
        con = connect(path, read_only=True)
    except StoreError as exc:  # open read-write elsewhere, and not by run (no run lock)
        return Finding("database", WARN, str(exc), "run waits 10 s for it, then gives up: "
                       "stop whatever holds it")
    except duckdb.Error as exc:
        return Finding("database", FAIL, unusable_duckdb(path, _first_line(exc)), DUCKDB_FIX)
    try:
        version = schema_version(con)
        block_size, blocks = con.execute(
            "SELECT block_size, total_blocks FROM pragma_database_size()").fetchone()
    except duckdb.Error as exc:
        return Finding("database", FAIL, unusable_duckdb(path, _first_line(exc)), DUCKDB_FIX)
    finally:
        con.close()
    size, needed = path.stat().st_size, DUCKDB_HEADERS + blocks * block_size
    if size < needed:
        return Finding("database", FAIL, unusable_duckdb(
            path, f"truncated: {size} bytes, its header needs {needed} for {blocks} blocks"),
            DUCKDB_FIX)
    if version > SCHEMA_VERSION:
        return Finding("database", FAIL, f"{path} is at schema version {version}, newer than "
                       f"this methtrader ({SCHEMA_VERSION})",
                       "upgrade methtrader (or restore a backup made by this version)")
    return Finding("database", OK, f"{path}: schema version {version}, "
                   f"{size / 2**20:.1f} MiB")


def check_queue_file(state_dir: Path) -> Finding:
    """The SQLite job queue, read-only through ``PRAGMA quick_check`` (huey's own open would
    stop ``run`` with a traceback on a damaged one)."""
    path = StatePaths(state_dir).queue
    if _running(state_dir):
        return Finding("job queue", OK, f"sqlite: {path}: {HELD}")
    if not path.exists():
        return Finding("job queue", OK, f"sqlite: {path}: none yet (run creates it)")
    from appliance.startup import sqlite_damage, unusable_queue

    # with no -wal (or an empty one) the file is all there is: read it as immutable, so that
    # the read-only open neither leaves an empty -wal and -shm beside it nor writes the -shm
    wal = path.with_name(f"{path.name}-wal")
    why = sqlite_damage(path, immutable=not (wal.exists() and wal.stat().st_size > 0))
    if why is not None:
        return Finding("job queue", FAIL, *unusable_queue(path, why))
    return Finding("job queue", OK, f"sqlite: {path} (one box; passes quick_check)")


def check_virtual_clock(cfg: Config) -> Finding:
    """``clock.json`` through ``run``'s own loader; bybit runs on the wall clock and never
    reads it."""
    path = StatePaths(cfg.state_path).clock
    if cfg.general.exchange not in ("sim", "replay"):
        return Finding("virtual clock", OK, f"{cfg.general.exchange} runs on the wall clock "
                       f"({path.name} is not read)")
    if _running(cfg.state_path):
        return Finding("virtual clock", OK, f"{path}: {HELD}")
    if not path.exists():
        return Finding("virtual clock", OK, f"{path}: none yet (run starts the market clock "
                       "at the current time)")
    from appliance.clock import ClockFileError, load_virtual_clock

    try:
        clock = load_virtual_clock(cfg.state_path, 1.0, 0.0)
    except ClockFileError as exc:
        what, sep, fix = str(exc).rpartition("; ")
        if not sep:  # "cannot be read (...)": run's words give no advice
            what, fix = fix, (f"make {path.name} readable, or delete it to restart the "
                              "virtual clock at the current time")
        return Finding("virtual clock", FAIL, what, fix)
    at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(clock.now()))
    return Finding("virtual clock", OK, f"{path}: resumes at {at}")


def check_job_queue(cfg: Config) -> Finding:
    """One box: the SQLite queue file must be sound; a Redis queue or study must answer, and
    the artifact root must hold the lake the jobs read."""
    if cfg.jobs.backend != "redis":
        queue = check_queue_file(cfg.state_path)
        if queue.status != OK or cfg.automl.storage != "redis":
            return queue
    from appliance.redis_support import mask_url
    from appliance.worker import check_redis

    try:
        check_redis(cfg.jobs.redis_url)
    except ConnectionError as exc:
        return Finding("job queue", FAIL, str(exc),
                       "start redis-server, or fix jobs.redis_url (see 'Running jobs across "
                       "machines' in the README)")
    root = cfg.artifact_path
    if root != cfg.state_path and not (root / "lake").is_dir():
        return Finding("job queue", WARN, f"Redis at {mask_url(cfg.jobs.redis_url)} answers, "
                       f"but jobs.artifact_root {root} has no lake/",
                       "bind-mount the state dir's lake/ there (see the README)")
    return Finding("job queue", OK, f"Redis at {mask_url(cfg.jobs.redis_url)} answers; "
                   f"artifacts under {root}")


def diagnose(cfg: Config) -> list[Finding]:
    return [check_python(), *check_packages(), *check_onnx_and_gpu(),
            *check_state_dir(cfg.state_path), check_clock(),
            check_metrics_port(cfg.general.metrics_port, cfg.state_path), check_exchange(cfg),
            check_database(cfg.state_path), check_job_queue(cfg), check_virtual_clock(cfg)]


def render(findings: list[Finding]) -> str:
    mark = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}
    lines = []
    for f in findings:
        lines.append(f"{mark[f.status]}  {f.check:<26} {f.detail}")
        if f.fix and f.status != OK:
            lines.append(f"{'':<6}{'':<26} fix: {f.fix}")
    fails = sum(f.status == FAIL for f in findings)
    warns = sum(f.status == WARN for f in findings)
    lines.append("")
    running = any(HELD in f.detail for f in findings)
    lines.append(f"{fails} failing, {warns} warning(s): " + (
        "`methtrader run` cannot work until the failing checks are fixed" if fails
        else "`methtrader run` is running on this state dir" if running
        else "`methtrader run` can start"))
    return "\n".join(lines)
