"""The repository stands on its own: a clone with nothing beside it has everything its tests need.

A user who clones methtrader has no sibling folders, so no tracked file may point outside the
repository, and a fresh clone must collect the whole suite and find its real candle files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Spelled in pieces so that this file does not match its own search.
OUTSIDE = ("../" + "shared", "/work/" + "shared", "shared" + "/data")


def _git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def checkout() -> Path:
    """The repository root, when it is a git checkout and git is installed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    top = _git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.decode().strip()).resolve() != ROOT:
        pytest.skip(f"{ROOT} is not a git checkout")
    return ROOT


def test_no_tracked_file_reaches_outside_the_repository(checkout):
    listed = _git("ls-files", "-z")
    assert listed.returncode == 0, listed.stderr.decode()
    files = [f for f in listed.stdout.decode().split("\0") if f]
    assert "tests/fixtures/real/README.md" in files  # the scan covers the fixtures too
    offending = []
    for name in files:
        path = checkout / name
        if not path.is_file():  # deleted in the work tree but still in the index
            continue
        data = path.read_bytes()
        offending += [f"{name}: {needle}" for needle in OUTSIDE if needle.encode() in data]
    assert not offending, "tracked files name a folder outside the repository:\n" + \
        "\n".join(offending)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_clone_with_nothing_beside_it_collects_the_suite_and_finds_its_data(checkout,
                                                                             tmp_path):
    clone = tmp_path / "alone" / "methtrader"
    cloned = _git("clone", "-q", "--no-local", str(checkout), str(clone), cwd=tmp_path)
    assert cloned.returncode == 0, cloned.stderr.decode()
    assert sorted(p.name for p in clone.parent.iterdir()) == ["methtrader"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}

    where = subprocess.run(
        [sys.executable, "-c", "from tests.conftest import REAL_DATA; print(REAL_DATA)"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    real = Path(where.stdout.strip())
    assert real.is_relative_to(clone), f"the clone's tests read {real}, outside the clone"
    assert (real / "freqtrade" / "ETH_BTC-5m.json").is_file()
    assert (real / "quantconnect_lean" / "Data" / "cryptofuture" / "bybit" / "minute" / "btcusdt"
            / "20221213_trade.zip").is_file()

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=150)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # test ids may say "error" (test_..._errors); any other line that does is a failure
    problems = [line for line in out.splitlines() if "::" not in line and "error" in line.lower()]
    assert not problems, "\n".join(problems)
    collected = re.search(r"(\d+) tests? collected", out)
    assert collected and int(collected.group(1)) > 0, out[-3000:]
