"""``methtrader backup DEST`` and ``methtrader restore SRC``: a state dir copied and put back.

A backup is a folder holding, with the state dir's own relative paths:

* ``methtrader.duckdb``: checkpointed and copied while nothing can write to it. While ``run`` is
  up that happens inside ``run`` (an operator command through the bus), on the store's thread,
  with ``clock.json`` and ``sim_account.json``, the other files it owns. When ``run`` is down
  the CLI opens the file itself, so no ``run`` can start meanwhile.
* ``lake/`` (day files are replaced whole, by rename, so each is copied whole) and
  ``artifacts/`` (finished runs only), and ``optuna.journal`` when there is one: the CLI copies
  them.
* ``switches.json``: the bus's switches (``maintenance_mode``, ``deploys_frozen``).
* ``MANIFEST.json``, written last: every file's relative path, sha256 and size. A folder without
  it is an unfinished backup.

Left out: the rest of the bus (heartbeats, events, snapshots: rebuilt by ``run``), the job queue
(the schedule queues again), logs and earlier backups.

``restore`` checks every file against the manifest before it puts anything back, refuses while
``run`` is up on the target, moves an existing target aside and restores with 0700 folders and
0600 files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from appliance.bus import SWITCHES, Bus, operator_name
from appliance.config import Config
from appliance.context import ServiceContext
from appliance.contracts import Command
from appliance.paths import OutsideStateDir, StatePaths
from appliance.store import StoreError, connect, run_sql, schema_version
from data.files import fsync_path, sha256_file

MANIFEST = "MANIFEST.json"
SWITCHES_FILE = "switches.json"
FORMAT = 1
COMMAND = Command.BACKUP
FileEntry = dict[str, Any]


class BackupError(Exception):
    """A backup or restore that cannot go ahead; ``code`` is the CLI's exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _mkdirs(root: Path, rel_parent: Path) -> None:
    d = root
    for part in rel_parent.parts:
        d = d / part
        if not d.exists():
            d.mkdir(mode=0o700)


def copy_file(src: Path, root: Path, rel: str) -> FileEntry:
    """Copy ``src`` to ``root/rel`` (0600, fsynced), hashing what was read; the file is read
    once, so the copy and its sha256 describe the same bytes."""
    dst = root / rel
    _mkdirs(root, Path(rel).parent)
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fout:
            for block in iter(lambda: fin.read(1 << 20), b""):
                h.update(block)
                fout.write(block)
                size += len(block)
            fout.flush()
            os.fsync(fout.fileno())
    return {"sha256": h.hexdigest(), "size": size}


def write_file(root: Path, rel: str, data: bytes) -> FileEntry:
    dst = root / rel
    _mkdirs(root, Path(rel).parent)
    tmp = dst.with_name(f".{dst.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dst)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


# -- the part `run` does (or the CLI, when run is down) ---------------------------------------

def copy_owned_files(con: Any, paths: StatePaths, dest: Path) -> dict[str, FileEntry]:
    """CHECKPOINT the database and copy it with the other files ``run`` writes. The caller
    holds the only connection (in ``run``: on the store's thread), so no write lands mid-copy."""
    run_sql(con, "CHECKPOINT")
    files = {}
    owned = [paths.duckdb, paths.clock, paths.sim_account]
    if paths.duckdb_wal.exists() and paths.duckdb_wal.stat().st_size:
        owned.append(paths.duckdb_wal)  # nothing left after a checkpoint, normally
    for src in owned:
        if src.exists():
            files[paths.rel(src)] = copy_file(src, dest, paths.rel(src))
    return files


async def backup_command(ctx: ServiceContext, args: dict[str, Any]) -> dict[str, Any]:
    """The ``backup`` operator command, executed by ``run``: the audit journal is flushed into
    DuckDB first, so the copy holds every operator action so far."""
    from appliance.services import operator

    dest = Path(args["dest"])
    if not dest.is_absolute() or not dest.is_dir() or any(dest.iterdir()):
        raise BackupError(f"{dest}: not an empty folder made by `methtrader backup`")
    await operator.sync_audit(ctx)
    paths = StatePaths(ctx.cfg.state_path)
    store = ctx.store.store
    files = await ctx.store.run(copy_owned_files, store.con, paths, dest)
    version = await ctx.store.run(schema_version, store.con)
    return {"files": files, "schema_version": version}


# -- the CLI's part --------------------------------------------------------------------------

def _tree(root: Path, skip_dir_suffix: str = ".partial") -> Iterator[Path]:
    """Finished files under ``root``, sorted; temp files (``.name.tmp``) and unfinished run
    folders are skipped."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.endswith(skip_dir_suffix))
        for name in sorted(filenames):
            if not (name.startswith(".") and name.endswith(".tmp")):
                yield Path(dirpath) / name


def copy_shared_files(paths: StatePaths, dest: Path) -> dict[str, FileEntry]:
    """The lake, the artifacts and the Optuna journal: files that are written whole (or only
    appended to), so each is copied as one consistent version."""
    files = {}
    sources = [*_tree(paths.lake), *_tree(paths.artifacts)]
    if paths.optuna_journal.exists():
        sources.append(paths.optuna_journal)
    for src in sources:
        try:
            files[paths.rel(src)] = copy_file(src, dest, paths.rel(src))
        except FileNotFoundError:
            continue  # replaced or trimmed between listing and copying: not part of this copy
    return files


def export_switches(bus: Bus) -> dict[str, Any]:
    return {name: {"value": bus.switch(name), "meta": bus.switch_meta(name)} for name in SWITCHES}


def _prepare_dest(paths: StatePaths, dest: Path) -> Path:
    dest = dest.expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if dest.is_dir() and not (dest / MANIFEST).exists() and any(
                (dest / name).exists() for name in (paths.duckdb.name, "lake", SWITCHES_FILE)):
            raise BackupError(f"{dest} holds an unfinished backup (no {MANIFEST}: it was "
                              "interrupted); remove it or pick a new destination", 2)
        raise BackupError(f"{dest} already exists and is not an empty folder; pick a new "
                          "destination", 2)
    try:
        inside = paths.rel(dest)
    except OutsideStateDir:
        inside = None
    if inside is not None and not dest.is_relative_to(paths.backups):
        raise BackupError(f"{dest} is inside the state dir {paths.root}; back up to a folder "
                          f"outside it (or under {paths.backups})", 2)
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    return dest


def _owned_via_run(bus: Bus, dest: Path, wait_s: float) -> dict[str, Any]:
    from appliance.commands import CommandFailed, send_and_wait

    try:
        return send_and_wait(bus, COMMAND, {"dest": str(dest), "reason": f"backup to {dest}"},
                             deadline_s=wait_s)
    except CommandFailed as exc:
        raise BackupError(f"the appliance did not make the backup: {exc}; {dest} is "
                          f"incomplete (no {MANIFEST})") from None


def _owned_here(paths: StatePaths, dest: Path) -> dict[str, Any]:
    try:
        con = connect(paths.duckdb)
    except StoreError as exc:
        raise BackupError(f"{exc}; retry once it has started or stopped") from None
    try:
        return {"files": copy_owned_files(con, paths, dest), "schema_version": schema_version(con)}
    finally:
        con.close()


def make_backup(cfg: Config, dest: Path, *, wait_s: float = 300.0) -> dict[str, Any]:
    """``methtrader backup DEST``: through ``run`` when it is up, else directly."""
    from appliance.liveness import is_running

    paths = StatePaths(cfg.state_path)
    if not paths.duckdb.exists():
        raise BackupError(f"no methtrader state in {paths.root} (no {paths.duckdb.name}); "
                          "check --state-dir", 2)
    dest = _prepare_dest(paths, dest)
    with Bus(paths.bus, events_maxlen=cfg.bus.events_maxlen) as bus:
        running = is_running(paths.root)
        try:
            owned = _owned_via_run(bus, dest, wait_s) if running else _owned_here(paths, dest)
        except BackupError:
            if not any(dest.iterdir()):
                dest.rmdir()  # nothing was copied: leave no empty folder behind
            raise
        files = {**owned["files"], **copy_shared_files(paths, dest)}
        switches = json.dumps(export_switches(bus), indent=1, sort_keys=True).encode()
        files[SWITCHES_FILE] = write_file(dest, SWITCHES_FILE, switches)
        manifest = {"format": FORMAT, "created": time.time(), "source": str(paths.root),
                    "via": "run" if running else "cli",
                    "schema_version": owned["schema_version"], "files": files}
        write_file(dest, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        fsync_path(dest)
        if not running:
            bus.audit(actor=operator_name(), action="command:backup", reason=f"backup to {dest}",
                      details={"dest": str(dest), "files": len(files), "source": "cli"})
    return {"dest": str(dest), "files": len(files),
            "bytes": sum(f["size"] for f in files.values()), "via": manifest["via"],
            "schema_version": manifest["schema_version"]}


# -- restore ---------------------------------------------------------------------------------

def read_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise BackupError(f"{src} is not a finished methtrader backup (no {MANIFEST})", 2) \
            from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{path} is damaged ({exc}); this backup cannot be restored", 2) \
            from None
    if manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise BackupError(f"{path}: unknown backup format {manifest.get('format')!r}", 2)
    return manifest


def verify_backup(src: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is there with its size and sha256; raises naming the
    files that are not (exit 2)."""
    root = StatePaths(src)
    bad = []
    for rel, entry in sorted(manifest["files"].items()):
        try:
            path = root.resolve(rel)
        except OutsideStateDir:
            bad.append(f"{rel} (a path outside the backup)")
            continue
        if not path.is_file():
            bad.append(f"{rel} (missing)")
        elif path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            bad.append(f"{rel} (sha256 differs: tampered or damaged)")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise BackupError(f"backup {src} does not match its {MANIFEST}: "
                          f"{', '.join(bad[:5])}{more}; nothing was restored", 2)


def _refuse_if_running(cfg: Config, paths: StatePaths) -> None:
    from appliance.liveness import is_running

    if not paths.root.exists():
        return
    if is_running(paths.root):
        raise BackupError(f"`methtrader run` is up on {paths.root}; stop it before restoring")
    if paths.duckdb.exists():
        try:
            connect(paths.duckdb, read_only=True).close()
        except StoreError as exc:
            raise BackupError(f"{exc}; stop it before restoring") from None


def _lock_down(root: Path) -> None:
    """0700 folders, 0600 files: the state dir is the operator's alone."""
    root.chmod(0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            (Path(dirpath) / d).chmod(0o700)
        for f in filenames:
            (Path(dirpath) / f).chmod(0o600)


def restore(cfg: Config, src: Path) -> dict[str, Any]:
    """``methtrader restore SRC``: verify, stage next to the target, move the old one aside,
    put the staged copy in place (one rename)."""
    src = src.expanduser().absolute()
    manifest = read_manifest(src)
    verify_backup(src, manifest)
    paths = StatePaths(cfg.state_path)
    _refuse_if_running(cfg, paths)
    when = stamp()
    paths.root.parent.mkdir(parents=True, exist_ok=True)
    staging = paths.root.with_name(f".{paths.root.name}.restoring-{when}")
    staging.mkdir(mode=0o700)
    try:
        for rel, entry in sorted(manifest["files"].items()):
            if rel == SWITCHES_FILE:
                continue
            copied = copy_file(src / rel, staging, rel)
            if copied != {"sha256": entry["sha256"], "size": entry["size"]}:
                raise BackupError(f"{src / rel} changed while it was restored; nothing was "
                                  "restored", 2)
        switches = json.loads((src / SWITCHES_FILE).read_text()) \
            if SWITCHES_FILE in manifest["files"] else {}
        with Bus(StatePaths(staging).bus, events_maxlen=cfg.bus.events_maxlen) as bus:
            for name, state in switches.items():
                if name in SWITCHES:
                    bus.set_switch(name, bool(state["value"]), actor=operator_name(),
                                   reason=f"restored from backup {src}", source="restore")
            bus.audit(actor=operator_name(), action="restore", reason=f"from {src}",
                      details={"files": len(manifest["files"]),
                               "backup_created": manifest.get("created")})
        _lock_down(staging)
        aside = None
        if paths.root.exists():
            if paths.root.is_dir() and not any(paths.root.iterdir()):
                paths.root.rmdir()
            else:
                aside = paths.root.with_name(f"{paths.root.name}.before-restore-{when}")
                os.rename(paths.root, aside)
        os.rename(staging, paths.root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"restored": str(paths.root), "from": str(src), "files": len(manifest["files"]),
            "bytes": sum(f["size"] for f in manifest["files"].values()),
            "moved_aside": None if aside is None else str(aside),
            "schema_version": manifest.get("schema_version")}
