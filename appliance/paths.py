"""Every path of a state dir, named in one place.

A state dir is the operator's alone and must stay relocatable: a ``cp -a`` copy, a backup put
back or a move to a new disk runs on its own. So every path stored in it (DuckDB rows, the bus,
receipts) is relative to the state dir, written with :meth:`StatePaths.rel` and read back with
:meth:`StatePaths.resolve`, which refuses anything that would point outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ARTIFACTS = "artifacts"
DB_NAME = "methtrader.duckdb"
MARKER = ".methtrader"
KILL_FILE = "KILL"


class OutsideStateDir(ValueError):
    """A path that does not lie inside the state dir it is used with."""


@dataclass(frozen=True)
class StatePaths:
    """The files and folders of one state dir (nothing is created here)."""

    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root).expanduser().absolute())

    @property
    def duckdb(self) -> Path:
        return self.root / DB_NAME

    @property
    def duckdb_wal(self) -> Path:
        return self.root / f"{DB_NAME}.wal"

    @property
    def marker(self) -> Path:
        """Written by the first ``run``: this folder is a methtrader state dir."""
        return self.root / MARKER

    @property
    def kill_file(self) -> Path:
        """The operator's kill switch when the bus cannot be written (appliance/safety.py)."""
        return self.root / KILL_FILE

    @property
    def bus(self) -> Path:
        return self.root / "bus"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def features(self) -> Path:
        """The feature job's output (data/feature_job.py)."""
        return self.lake / "features"

    @property
    def artifacts(self) -> Path:
        return self.root / ARTIFACTS

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def clock(self) -> Path:
        return self.root / "clock.json"

    @property
    def sim_account(self) -> Path:
        return self.root / "sim_account.json"

    @property
    def orders_journal(self) -> Path:
        """The order gateway's write-ahead log (appliance/order_journal.py)."""
        return self.root / "orders.journal"

    @property
    def queue(self) -> Path:
        return self.root / "queue.db"

    @property
    def optuna_journal(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def run_lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def jobs(self) -> Path:
        """Marker files of the queue's ``selftest`` job."""
        return self.root / "jobs"

    def run_dir(self, run_id: str) -> Path:
        return self.artifacts / run_id

    def model_rel(self, run_id: str) -> str:
        """Where a run's ONNX file lives, relative to the state dir."""
        return f"{ARTIFACTS}/{run_id}/model.onnx"

    def rel(self, path: Path | str) -> str:
        """``path`` relative to the state dir (POSIX separators), for storing.

        A relative ``path`` is taken as already relative to the state dir. Raises
        :class:`OutsideStateDir` for a path that is not inside it.
        """
        p = Path(path)
        if not p.is_absolute():
            return _inside(PurePosixPath(p.as_posix()), path, self.root)
        for base, candidate in ((self.root, p), (self.root.resolve(), p.resolve())):
            try:
                return _inside(PurePosixPath(candidate.relative_to(base).as_posix()), path,
                               self.root)
            except ValueError:
                continue
        raise OutsideStateDir(f"{path} is outside the state dir {self.root}")

    def resolve(self, rel: str) -> Path:
        """The absolute path of a stored relative path, inside this state dir."""
        if Path(rel).is_absolute():
            raise OutsideStateDir(f"{rel} is absolute; state dir paths are stored relative to "
                                  f"{self.root}")
        return self.root / _inside(PurePosixPath(rel), rel, self.root)

    def relativise(self, path: str) -> str:
        """A stored path made relative, also one written by an older methtrader (absolute).

        An absolute path inside this state dir loses its prefix. One from another state dir
        (the original of a copy or a restored backup) keeps its part from the last
        ``artifacts/`` segment on, so it names this state dir's copy of the file, never the
        original. Anything else is refused.
        """
        try:
            return self.rel(path)
        except OutsideStateDir:
            parts = PurePosixPath(Path(path).as_posix()).parts
            if ARTIFACTS not in parts:
                raise
            last = len(parts) - 1 - parts[::-1].index(ARTIFACTS)
            return _inside(PurePosixPath(*parts[last:]), path, self.root)

    def resolve_stored(self, path: str) -> Path:
        """The file a stored path names in this state dir (:meth:`relativise`, then
        :meth:`resolve`): never a file of another state dir."""
        return self.resolve(self.relativise(path))


def _inside(rel: PurePosixPath, original: object, root: Path) -> str:
    if ".." in rel.parts or not rel.parts or rel.parts == (".",):
        raise OutsideStateDir(f"{original} does not name a file inside the state dir {root}")
    return rel.as_posix()
