"""Sample a whole process tree from /proc: CPU seconds and resident memory of a root process
and ALL its descendants (``run``, the huey consumer in its own session, its workers, their
short-lived job processes).

Reading /proc (:func:`read_proc`) is kept apart from the arithmetic (:func:`tree_usage`), a pure
function over the parsed rows, so the arithmetic is tested on made-up tables.

CPU: each live process counts its own user+system time plus ``cutime``/``cstime``, the time of
children it has already waited for (recursively), so a job process that ran and exited between
two samples is still counted once its parent reaped it. A finished-but-unreaped child (a zombie)
still shows its own time in its own row.

Memory: ``rss`` sums each process's resident set (pages shared between a forked parent and
child count twice: an upper bound); ``pss`` sums the proportional set size from
``smaps_rollup`` where readable (shared pages split between their users: what the tree costs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcRow:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime
    rss_bytes: int
    pss_bytes: int | None  # None: smaps_rollup not readable
    name: str = ""


@dataclass(frozen=True)
class TreeUsage:
    pids: tuple[int, ...]
    cpu_s: float
    rss_bytes: int
    pss_bytes: int
    root_rss_bytes: int = 0  # the root process alone (``run``: the trio services)


def parse_stat(text: str, rss_pages_field: bool = True) -> tuple[int, int, int, int, str]:
    """(pid, ppid, cpu ticks, rss bytes, name) from a ``/proc/<pid>/stat`` line. The command
    name is in parentheses and may itself hold spaces or ')'."""
    head, tail = text.rsplit(")", 1)
    pid_text, name = head.split("(", 1)
    f = tail.split()
    # tail fields: 0 state, 1 ppid, ... 11 utime, 12 stime, 13 cutime, 14 cstime, ... 21 rss
    cpu = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return int(pid_text), int(f[1]), cpu, int(f[21]) * PAGE, name


def parse_pss(text: str) -> int | None:
    """PSS in bytes from ``/proc/<pid>/smaps_rollup`` text (None when absent)."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return None


def read_proc(root: Path = Path("/proc"), with_pss: bool = True) -> dict[int, ProcRow]:
    """Every process readable under ``root`` (ones that exit mid-read are skipped)."""
    rows: dict[int, ProcRow] = {}
    for entry in root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pid, ppid, cpu, rss, name = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        pss = None
        if with_pss:
            try:
                pss = parse_pss((entry / "smaps_rollup").read_text())
            except OSError:
                pss = None
        rows[pid] = ProcRow(pid, ppid, cpu, rss, pss, name)
    return rows


def sample_tree(root: int, proc: Path = Path("/proc")) -> TreeUsage:
    """One sample of ``root``'s tree: /proc's stat files, then PSS of the tree's processes."""
    rows = read_proc(proc, with_pss=False)
    tree = descendants({p: r.ppid for p, r in rows.items()}, root)
    rows.update(_with_pss(rows, tree, proc))
    return tree_usage(rows, root)


def _with_pss(rows: dict[int, ProcRow], pids: set[int], proc: Path) -> dict[int, ProcRow]:
    out = {}
    for pid in pids:
        try:
            pss = parse_pss((proc / str(pid) / "smaps_rollup").read_text())
        except OSError:
            continue
        r = rows[pid]
        out[pid] = ProcRow(r.pid, r.ppid, r.cpu_ticks, r.rss_bytes, pss, r.name)
    return out


def descendants(parents: dict[int, int], root: int) -> set[int]:
    """``root`` and every process below it, given pid → parent pid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in tree:
            continue
        tree.add(pid)
        stack.extend(children.get(pid, ()))
    return tree if root in parents else set()


def tree_usage(rows: dict[int, ProcRow], root: int, ticks_per_s: int = TICKS) -> TreeUsage:
    """CPU seconds and memory of ``root`` and all its descendants in one /proc snapshot
    (an empty tree when ``root`` is gone). A row without PSS counts its RSS there."""
    pids = descendants({p: r.ppid for p, r in rows.items()}, root)
    tree = [rows[p] for p in sorted(pids)]
    return TreeUsage(pids=tuple(sorted(pids)),
                     cpu_s=sum(r.cpu_ticks for r in tree) / ticks_per_s,
                     rss_bytes=sum(r.rss_bytes for r in tree),
                     pss_bytes=sum(r.rss_bytes if r.pss_bytes is None else r.pss_bytes
                                   for r in tree),
                     root_rss_bytes=rows[root].rss_bytes if pids else 0)


@dataclass
class TreePeak:
    """Running maxima over a series of samples of one tree."""

    cpu_s: float = 0.0
    rss_bytes: int = 0
    pss_bytes: int = 0
    root_rss_bytes: int = 0
    processes: int = 0
    samples: int = 0
    rss_series: list[int] = field(default_factory=list)

    def add(self, usage: TreeUsage) -> None:
        if not usage.pids:
            return
        self.samples += 1
        self.rss_series.append(usage.rss_bytes)
        # CPU is cumulative; its maximum is the latest total (a process that exited before
        # its parent reaped it can make one sample dip)
        self.cpu_s = max(self.cpu_s, usage.cpu_s)
        self.rss_bytes = max(self.rss_bytes, usage.rss_bytes)
        self.pss_bytes = max(self.pss_bytes, usage.pss_bytes)
        self.root_rss_bytes = max(self.root_rss_bytes, usage.root_rss_bytes)
        self.processes = max(self.processes, len(usage.pids))

    def rss_quantile(self, q: float) -> int:
        """The tree's RSS at quantile ``q`` of the samples (0 with none): the median says
        what the tree holds most of the time, the peak what a training job adds on top."""
        if not self.rss_series:
            return 0
        ordered = sorted(self.rss_series)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
