"""Shared fixtures: small real data in temporary state directories, and a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

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


# -- a real redis-server (the scale-out tests) -------------------------------------------------
# On a free loopback port, in a temporary folder, with no persistence, stopped afterwards;
# skipped (with the reason) only where the binary or the `redis` extra is absent
# (`install.sh --dev` installs Debian's redis-server).

STARTUP_S = 10.0


def _ping(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                         socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer:
    """A running ``redis-server``: its URL, and :meth:`stop` to take it away mid-test."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (./install.sh --dev installs it; or "
                    "apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis extra is not installed "
                                        "(pip install -e '.[redis]')")
    folder = tmp_path / "redis"
    folder.mkdir()
    port = free_port()
    log = open(folder / "redis.log", "w")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(folder),
                             "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}: "
                                   f"{(folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)
        server = RedisServer(proc, port)
        yield server
    finally:
        RedisServer(proc, port).stop()
        log.close()
