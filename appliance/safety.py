"""The state dir as a thing to protect: what makes one, who may read it, and the kill file.

* **Recognising a state dir.** ``run`` writes a marker (``.methtrader``) when it first uses a
  directory; older state dirs are recognised by their DuckDB file or bus. Commands that change
  the appliance's state (``kill``, ``resume``, ``promote``...) refuse any other directory, so a
  typo in ``--state-dir`` cannot create a second, empty bus and report a kill switch that the
  real appliance never sees.
* **Permissions.** The state dir holds positions, trades and the audit log: it is created 0700
  and its files 0600 (the CLI sets ``umask 077``); ``run`` warns at start when they are looser.
* **The kill file.** When the bus cannot be opened (a corrupt ``cache.db``), ``kill`` writes
  ``KILL`` (0600: who, why, when) in the state dir. The bus reads maintenance mode as ON while
  it exists, ``run`` turns it into an audited switch change, and ``resume`` removes it.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from appliance.paths import DB_NAME, MARKER, StatePaths

OWNER_ONLY_DIR = 0o700
OWNER_ONLY_FILE = 0o600


class StateDirError(ValueError):
    """The directory given is not (or cannot be) an appliance's state dir: bad input."""


def operator_name() -> str:
    """The OS user name of this process (never an argument: an audit row says who really)."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid{os.getuid()}"


def is_state_dir(state_dir: Path) -> bool:
    paths = StatePaths(state_dir)
    return paths.root.is_dir() and any(p.exists() for p in (paths.marker, paths.duckdb,
                                                             paths.bus))


def require_state_dir(state_dir: Path) -> Path:
    """The state dir of an appliance, or :class:`StateDirError` (nothing is created)."""
    d = Path(state_dir)
    if not is_state_dir(d):
        what = "does not exist" if not d.exists() else (
            "is not a directory" if not d.is_dir() else "holds no appliance state")
        raise StateDirError(f"{d} {what}: it is not a methtrader state dir (no {MARKER}, "
                            f"{DB_NAME} or bus/); check --state-dir (or METHTRADER_STATE_DIR), "
                            "or start `methtrader run` there once")
    return d


def refuse_a_file(state_dir: Path) -> None:
    """:class:`StateDirError` when ``state_dir`` is there but is not a directory (one not there
    yet is a state dir never used: the commands that write one create it)."""
    d = Path(state_dir)
    if d.exists() and not d.is_dir():
        require_state_dir(d)


def prepare_state_dir(state_dir: Path) -> bool:
    """Create the state dir (0700) if needed and check that it is a writable directory.

    Returns True when it was created. Raises :class:`StateDirError` for a path that is a file
    or cannot be written (read-only file system, no permission); nothing is left behind."""
    d = Path(state_dir)
    if d.exists() and not d.is_dir():
        raise StateDirError(f"state dir {d} is not a directory; choose another --state-dir")
    created = False
    if not d.exists():
        try:
            d.mkdir(parents=True, mode=OWNER_ONLY_DIR)
        except OSError as exc:
            raise StateDirError(f"cannot create state dir {d}: {exc.strerror}; choose "
                                "another --state-dir") from None
        os.chmod(d, OWNER_ONLY_DIR)  # mkdir's mode is masked by the umask
        created = True
    probe = d / f".write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE)
    except OSError as exc:
        raise StateDirError(f"state dir {d} cannot be written ({exc.strerror}); choose "
                            "another --state-dir or fix its permissions") from None
    os.close(fd)
    os.unlink(probe)
    return created


def write_marker(state_dir: Path) -> None:
    path = StatePaths(state_dir).marker
    if not path.exists():
        _write_private(path, {"created_at": time.time(), "by": "methtrader run", "format": 1})


def loose_permissions(state_dir: Path, depth: int = 2) -> list[str]:
    """Paths in the state dir (to ``depth`` levels; the lake's many files are skipped) that
    group or others may read or write, as ``"path (mode)"``."""
    root = Path(state_dir)
    found: list[str] = []

    def visit(path: Path, level: int) -> None:
        try:
            st = path.lstat()
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            found.append(f"{path} ({stat.S_IMODE(st.st_mode):o})")
        if stat.S_ISDIR(st.st_mode) and level < depth and path.name != "lake":
            try:
                children = sorted(path.iterdir())
            except OSError:
                return
            for child in children:
                visit(child, level + 1)

    visit(root, 0)
    return found


# -- the kill file --------------------------------------------------------------------------

def kill_file(state_dir: Path) -> Path:
    return StatePaths(state_dir).kill_file


KILL_FILE_HISTORY = 50
"""Earlier kills a kill file keeps (newest first): with the bus broken it is the only record."""


def write_kill_file(state_dir: Path, reason: str, why_bus: str) -> dict[str, Any]:
    """Write the kill file; a kill file already there (an earlier kill, not yet honoured)
    goes into ``earlier``, so every operator's who and why reaches the audit log."""
    entry: dict[str, Any] = {"actor": operator_name(), "uid": os.getuid(), "reason": reason,
                             "ts": time.time(), "bus_error": why_bus}
    previous = read_kill_file(state_dir)
    if previous is not None:
        earlier = previous.pop("earlier", [])
        entry["earlier"] = ([previous] + (earlier if isinstance(earlier, list) else [])
                            )[:KILL_FILE_HISTORY]
    _write_private(kill_file(state_dir), entry)
    stamp_switches(StatePaths(state_dir).bus)  # an order being sent now sees it at once
    return entry


SWITCH_STAMP = "switches.stamp"
STAMP_BYTES = 8
STATE_STAMP_AT = STAMP_BYTES  # the second stamp of the file: bytes 8-15
STAMP_FILE_BYTES = 2 * STAMP_BYTES


def stamp_switches(bus_dir: Path) -> bool:
    """Write new random bytes to the bus's switch stamp (the first 8 bytes of
    ``<bus>/switches.stamp``): every switch change and kill file does, so a reader that mapped
    the file sees that something changed without a system call (:meth:`appliance.bus.Bus.
    switch_token`). Random rather than a counter: two writers at once can never leave the
    value a reader already holds. False when the bus directory is not there (the kill file
    alone then speaks, at the next read)."""
    return _stamp(bus_dir, 0)


def stamp_state(bus_dir: Path) -> bool:
    """The same for the bus's state stamp (the file's next 8 bytes): every change of what the
    trading engine polls each bar (the registry version's mirror, the tradable pairs) writes
    it (:meth:`appliance.bus.Bus.state_token`)."""
    return _stamp(bus_dir, STATE_STAMP_AT)


def _stamp(bus_dir: Path, at: int) -> bool:
    try:
        fd = os.open(Path(bus_dir) / SWITCH_STAMP, os.O_WRONLY | os.O_CREAT, OWNER_ONLY_FILE)
    except OSError:
        return False
    try:
        os.pwrite(fd, os.urandom(STAMP_BYTES), at)
    finally:
        os.close(fd)
    return True


def read_kill_file(state_dir: Path) -> dict[str, Any] | None:
    """The kill file's entry; one that exists but cannot be parsed still means kill."""
    path = kill_file(state_dir)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"actor": "unknown", "reason": f"kill file unreadable: {exc.strerror}", "ts": None}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"actor": "unknown", "reason": "kill file present (unparsable)", "ts": None}
    return data


def remove_kill_file(state_dir: Path) -> bool:
    try:
        kill_file(state_dir).unlink()
    except FileNotFoundError:
        return False
    return True


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Crash-safe write of a small JSON file, 0600 from the start."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY_FILE)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
