"""The repository stands on its own: a clone with nothing beside it collects the whole suite,
and nothing in it names a folder outside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def test_a_bare_clone_collects_the_whole_suite(tmp_path: Path):
    clone = tmp_path / "alone" / "methtrader"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True,
                   timeout=120)
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0",
                          "-p", "no:cacheprovider"], cwd=clone, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "error" not in out.stdout.lower().split("\n")[-2]
    assert int(out.stdout.strip().splitlines()[-1].split()[0]) > 500  # "N tests collected"


BESIDE = ".." + "/shared"  # spelled apart, so that this file does not name it


def test_nothing_names_the_folder_beside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    named = [f for f in tracked if (ROOT / f).is_file() and not (ROOT / f).is_symlink()
             and BESIDE in (ROOT / f).read_text(errors="replace")]
    assert named == []
