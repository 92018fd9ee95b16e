"""``methtrader bench workers``: one AutoML study's trials on a Redis queue, consumed by one and
then by two ``methtrader worker`` processes (as on two machines), on this machine.

It starts a private ``redis-server`` (on a free loopback port, a temporary folder, no
persistence), writes the sim market's drift (3 symbols x 30 days of 5m bars) into a temporary
artifact root, queues ``TRIALS`` trial jobs of small forests (``automl.storage = "redis"``) and
times them from the first enqueue to the last trial's end, once per worker count (a new study
each time). It reports the wall time, trials per minute, the speed-up of two workers over one,
how many trials each study holds (one per job) and the load average: on a shared 2-core box
two workers compete with everything else, so the speed-up says what this box had to spare, and
a real second machine adds its own cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.automl import search_over, setup_to_json, space_to_json
from appliance.config import ConfigError
from appliance.jobs import Jobs
from models import automl
from models.honesty import sim_drift

TRIALS = 8
SYMBOLS = ("SOLUSDT", "DOGEUSDT", "AVAXUSDT")
DAYS = 30
SPACE = automl.Space(kinds=("rf",), window_days=(10, 30), horizon=(6, 24), rf_trees=(10, 40))
SETUP = automl.Setup(folds=3, max_train_samples=6000, seed=0)
WAIT_S = 900.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError("bench workers needs redis-server (./install.sh --dev installs it, "
                          "or apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    from appliance.worker import check_redis

    deadline = time.monotonic() + 10
    while True:
        try:
            check_redis(url, timeout_s=0.5)
            return proc, url
        except ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)


def _worker(url: str, root: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "appliance.cli", "worker", "--redis-url", url,
                             "--artifact-root", str(root), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait(cond: Any, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _study(url: str, root: Path, workers: int, name: str) -> dict[str, Any]:
    jobs = Jobs(root, redis_url=url)
    logs = [root / f"{name}-w{i}.log" for i in range(workers)]
    procs = [_worker(url, root, log) for log in logs]
    try:
        _wait(lambda: all("worker consuming" in log.read_text() for log in logs),
              "the workers", procs)
        setup = setup_to_json(SETUP, "redis")
        automl.open_study(root, name, SETUP.seed, redis_url=url)
        t0 = time.perf_counter()
        for _ in range(TRIALS):
            jobs.enqueue("automl_trial", name, list(SYMBOLS), setup, space_to_json(SPACE),
                         TRIALS, WAIT_S)
        _wait(lambda: search_over(root, name, TRIALS, url), "the trials", procs)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            _stop(p)
    trials = automl.open_study(root, name, SETUP.seed, fail_stale=False,
                               redis_url=url).get_trials(deepcopy=False)
    return {"wall_s": wall, "trials": len(trials),
            "pruned": sum(t.state.name == "PRUNED" for t in trials)}


def run() -> dict[str, Any]:
    from appliance.paths import StatePaths
    from data.lake import Lake
    from models.honesty import write_lake

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "shared"
        (root / "redis").mkdir(parents=True)
        write_lake(Lake(StatePaths(root).lake), sim_drift(0, symbols=SYMBOLS, days=DAYS))
        proc, url = _redis(root / "redis")
        try:
            one = _study(url, root, 1, "bench-one")
            two = _study(url, root, 2, "bench-two")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    load = os.getloadavg()
    return {
        "study": f"{TRIALS} rf trials, {len(SYMBOLS)} symbols x {DAYS} days of 5m, 3 folds",
        "one_worker_s": round(one["wall_s"], 1),
        "two_workers_s": round(two["wall_s"], 1),
        "trials_per_min_one": round(60 * one["trials"] / one["wall_s"], 2),
        "trials_per_min_two": round(60 * two["trials"] / two["wall_s"], 2),
        "speedup_two_over_one": round(one["wall_s"] / two["wall_s"], 2),
        "trials_in_study": f"{one['trials']} and {two['trials']} of {TRIALS}",
        "pruned": f"{one['pruned']} and {two['pruned']}",
        "cpu_cores": os.cpu_count(),
        "load_average_1_5_15": " ".join(f"{x:.2f}" for x in load),
    }
