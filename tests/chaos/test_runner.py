"""``chaos run`` in lanes: experiments at once, each in a scratch appliance of its own, with the
results a sequential run gives, in the experiments' order."""

from __future__ import annotations

import threading

import pytest

from chaos import runner
from chaos.experiment import Experiment, Result, incident_message
from chaos.experiments import EXPERIMENTS
from tests.e2e.conftest import methtrader


def _rendezvous(monkeypatch, wait_s: float = 20.0) -> dict[str, list]:
    """Two stand-in experiments that hold only when they run at the same time: ``first`` waits
    (at most ``wait_s``) for ``second`` to have started, so it also ends after it."""
    started = threading.Event()
    seen: dict[str, list] = {"workdirs": []}

    def first(h, rng) -> Result:
        seen["workdirs"].append(h.workdir)
        return Result("first", started.wait(timeout=wait_s), 1.0)

    def second(h, rng) -> Result:
        seen["workdirs"].append(h.workdir)
        started.set()
        return Result("second", True, 2.0)

    monkeypatch.setattr(runner, "EXPERIMENTS", {
        "first": Experiment("first", "-", "-", 1.0, first),
        "second": Experiment("second", "-", "-", 1.0, second)})
    return seen


def test_lanes_run_experiments_at_once_in_their_own_work_dirs_and_report_in_order(
        monkeypatch, tmp_path):
    seen = _rendezvous(monkeypatch)
    results = runner.run_experiments(["first", "second"], 3, workdir=tmp_path, lanes=2)
    assert [(r.experiment, r.held, r.details["seed"], r.details["lanes"]) for r in results] == [
        ("first", True, 3, 2), ("second", True, 3, 2)]
    assert len(set(seen["workdirs"])) == 2  # a harness each: no shared state dir or log
    # the incident says the MTTR was measured beside another experiment
    assert incident_message(results[0]) == "first (seed 3, 2 lanes): held; mttr=1.000s; lost=0"


def test_one_lane_runs_them_one_after_another(monkeypatch, tmp_path):
    """What ``bench chaos`` relies on: no experiment beside another (``first`` waits for
    ``second`` in vain), and a run's result does not wait for the next run."""
    _rendezvous(monkeypatch, wait_s=0.5)
    results = runner.run_experiments(["first", "second"], 0, workdir=tmp_path, lanes=1)
    assert [(r.experiment, r.held, r.details["lanes"]) for r in results] == [
        ("first", False, 1), ("second", True, 1)]
    assert incident_message(results[1]) == "second (seed 0): held; mttr=2.000s; lost=0"


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_two_real_experiments_in_two_lanes_give_the_sequential_verdicts(tmp_path):
    results = runner.run_experiments(["store-fault", "service-crash"], 0, workdir=tmp_path,
                                     lanes=2)
    assert [r.experiment for r in results] == ["store-fault", "service-crash"]
    for r in results:
        assert r.held, (r.experiment, r.failures, r.details)
        assert r.lost == 0 and r.mttr_s is not None and r.mttr_s > 0
        assert r.details["lanes"] == 2
    assert results[0].details["restarts"] > 0  # the faults did reach each appliance
    assert set(results[1].details["services"]) == {"feed", "trading", "training", "shadow",
                                                   "risk"}
    # each ran its own scratch appliance
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00-store-fault-0",
                                                          "01-service-crash-0"]


def test_lanes_outside_their_range_are_refused():
    with pytest.raises(ValueError):
        runner.run_experiments(["service-crash"], 0, lanes=0)
    out = methtrader("chaos", "run", "service-crash", "--lanes", "0", check=False)
    assert out.returncode == 2 and "--lanes" in out.stderr
    assert set(EXPERIMENTS) >= {"store-fault", "service-crash"}
