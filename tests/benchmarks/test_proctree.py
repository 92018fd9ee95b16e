"""``bench e2e``'s process-tree sampler: all descendants count (also one in its own session,
as the huey consumer is), reaped children's CPU is kept, a vanished root is an empty tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import pytest

from benchmarks._proctree import (PAGE, ProcRow, TreePeak, descendants, parse_pss, parse_stat,
                                 read_proc, sample_tree, tree_usage)

MB = 2**20


def _row(pid: int, ppid: int, ticks: int, rss_mb: int, pss_mb: int | None = None) -> ProcRow:
    return ProcRow(pid, ppid, ticks, rss_mb * MB, None if pss_mb is None else pss_mb * MB)


def test_the_tree_is_the_root_and_every_descendant_and_nothing_else():
    rows = {r.pid: r for r in (
        _row(1, 0, 0, 5), _row(10, 1, 100, 400, 300),   # run
        _row(11, 10, 50, 60, 40),                       # huey consumer (own session)
        _row(12, 11, 300, 200, 150), _row(13, 12, 25, 700, 690),  # worker, its job process
        _row(20, 1, 999, 9000), _row(21, 20, 999, 9000))}  # an unrelated tree
    usage = tree_usage(rows, 10, ticks_per_s=100)
    assert usage.pids == (10, 11, 12, 13)
    assert usage.cpu_s == pytest.approx(4.75)
    assert usage.rss_bytes == (400 + 60 + 200 + 700) * MB
    assert usage.pss_bytes == (300 + 40 + 150 + 690) * MB
    assert usage.root_rss_bytes == 400 * MB
    assert tree_usage(rows, 99).pids == ()  # the root is gone
    assert descendants({2: 1, 3: 2, 1: 3}, 1) == {1, 2, 3}  # a cycle (pid reuse) ends


def test_a_row_without_pss_counts_its_rss():
    rows = {10: _row(10, 1, 0, 100), 11: _row(11, 10, 0, 50, 20)}
    assert tree_usage(rows, 10).pss_bytes == 120 * MB


def test_stat_parsing_copes_with_a_name_holding_spaces_and_parentheses():
    fields = ["S", "42"] + ["0"] * 9 + ["7", "3", "20", "10"] + ["0"] * 6 + ["256"]
    pid, ppid, cpu, rss, name = parse_stat(f"4242 (huey (worker) 1) {' '.join(fields)}\n")
    assert (pid, ppid, cpu, name) == (4242, 42, 40, "huey (worker) 1")
    assert rss == 256 * PAGE
    assert parse_pss("Rss:  100 kB\nPss:  64 kB\n") == 64 * 1024
    assert parse_pss("Rss: 1 kB\n") is None


def test_peaks_keep_maxima_and_ignore_an_empty_tree():
    peak = TreePeak()
    rows = {10: _row(10, 1, 100, 300), 11: _row(11, 10, 100, 200)}
    peak.add(tree_usage(rows, 10, ticks_per_s=100))
    peak.add(tree_usage({10: _row(10, 1, 250, 310)}, 10, ticks_per_s=100))
    peak.add(tree_usage({}, 10))
    assert (peak.cpu_s, peak.rss_bytes, peak.processes, peak.samples) == (2.5, 500 * MB, 2, 2)
    assert peak.root_rss_bytes == 310 * MB
    assert peak.rss_quantile(0.5) == 500 * MB and peak.rss_quantile(0.0) == 310 * MB
    assert TreePeak().rss_quantile(0.5) == 0


TREE = """
import os, subprocess, sys, time
# a child that burns CPU and exits (reaped: its time moves to our cutime)
subprocess.run([sys.executable, "-c",
                "import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.5: pass"])
# a grandchild in its own session holding 80 MB, as the huey consumer's job would
g = subprocess.Popen([sys.executable, "-c",
                      "import sys,time\\nb=bytearray(80*2**20)\\nb[::4096]=b'x'*len(b[::4096])\\n"
                      "print('ready',flush=True)\\ntime.sleep(30)"],
                     start_new_session=True, stdout=subprocess.PIPE, text=True)
g.stdout.readline()
print(g.pid, flush=True)
time.sleep(30)
"""


@pytest.mark.timeout(60)
def test_a_real_tree_counts_a_grandchild_in_its_own_session_and_a_reaped_childs_cpu():
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TREE)],
                            stdout=subprocess.PIPE, text=True)
    grandchild = 0
    try:
        grandchild = int(proc.stdout.readline())
        usage = sample_tree(proc.pid)
        assert proc.pid in usage.pids and grandchild in usage.pids
        assert usage.rss_bytes >= 80 * MB  # the grandchild's buffer is resident
        assert 80 * MB <= usage.pss_bytes <= usage.rss_bytes  # its own pages, not shared
        assert tree_usage(read_proc(), proc.pid).pids == usage.pids
        assert usage.cpu_s >= 0.4  # the reaped child's half second of CPU is still counted
        child_only = tree_usage(read_proc(), grandchild)
        assert child_only.pids == (grandchild,)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if grandchild:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
