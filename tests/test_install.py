"""install.sh as a user runs it (the venv already exists: CI ran `./install.sh --dev`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


def install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "install.sh"), *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=280)


def test_second_run_changes_nothing_and_names_the_next_step():
    out = install("--dev")
    assert out.returncode == 0, out.stderr
    assert "nothing to do" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "Next: .venv/bin/python -m pytest"


def test_too_old_python_is_refused_clearly(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\nexit 1\n")  # answers 'too old' to the version probe
    fake.chmod(0o755)
    out = install("--dev", env={"PYTHON": str(fake)})
    assert out.returncode == 1
    assert "needs Python 3.11 or newer" in out.stderr


def test_unknown_option_is_refused():
    out = install("--gpu-please")
    assert out.returncode == 2 and "unknown option '--gpu-please'" in out.stderr


def test_systemd_unit_is_written_and_valid():
    out = install("--dev", "--systemd")
    assert out.returncode == 0, out.stderr
    unit = ROOT / "methtrader.service"
    assert str(unit) in out.stdout
    text = unit.read_text()
    assert f"ExecStart={ROOT}/.venv/bin/methtrader run" in text
    assert "KillSignal=SIGTERM" in text and "[Install]" in text
    if shutil.which("systemd-analyze"):
        check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stderr


def test_dev_install_without_apt_says_redis_tests_will_be_skipped(tmp_path):
    """Where apt-get is unavailable (or redis-server absent) --dev still succeeds and says
    clearly what to do and what happens to the Redis tests."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = Path(folder) / name
            if name in ("apt-get", "apt", "redis-server") or (bin_dir / name).exists():
                continue
            if os.access(target, os.X_OK) and target.is_file():
                (bin_dir / name).symlink_to(target)
    out = install("--dev", env={"PATH": str(bin_dir)})
    assert out.returncode == 0, out.stderr
    assert ("redis-server not found and apt-get is not available here" in out.stdout
            and "skipped otherwise" in out.stdout), out.stdout
