"""Shared fixtures: small real data in temporary state directories."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from appliance.config import Config, build_config

# Real candle files copied unchanged from public repositories; README.md there gives their sources.
REAL_DATA = Path(__file__).resolve().parent / "fixtures" / "real"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def cfg(state_dir: Path) -> Config:
    return build_config(env={}, overrides={"general": {"state_dir": str(state_dir),
                                                        "metrics_port": 0}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
