"""An experiment: a hypothesis about what stays true, an injection, a bounded duration and a
measured time to recovery (MTTR).

Each experiment is a plain function of a :class:`~chaos.harness.Harness` (which owns the
scratch state dir and the processes) and a seeded RNG, returning a :class:`Result`. ``held`` is
the verdict: every data and state hypothesis held and recovery came within the user's bar
(:data:`USER_MTTR_S`). ``lost`` counts acknowledged rows missing or duplicated afterwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

USER_MTTR_S = 300.0  # the user's bar: every fault recovered within 5 minutes


@dataclass
class Result:
    experiment: str
    held: bool
    mttr_s: float | None
    lost: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # which hypotheses did not hold, and why

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "held": self.held,
                "mttr_s": None if self.mttr_s is None else round(self.mttr_s, 3),
                "lost": self.lost, "failures": self.failures, "details": self.details}


class Verdict:
    """Collects the checks of one run of an experiment into a :class:`Result`."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        self.failures: list[str] = []
        self.details: dict[str, Any] = {}
        self.lost = 0

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok

    def result(self, mttr_s: float | None) -> Result:
        self.check(mttr_s is not None, "no recovery within the experiment's bound")
        if mttr_s is not None:
            self.check(mttr_s <= USER_MTTR_S, f"recovery took {mttr_s:.1f}s > {USER_MTTR_S:g}s")
        self.check(self.lost == 0, f"{self.lost} acknowledged rows lost or duplicated")
        return Result(self.experiment, not self.failures, mttr_s, self.lost, self.details,
                      self.failures)


def incident_message(r: Result) -> str:
    """A ``chaos`` incident's message: the verdict and ``mttr=…s``, which the Incidents
    screen's MTTR column reads back (:func:`appliance.services.heartbeat.incidents_snapshot`).
    ``details["origin"]`` says where the run came from (the weekly schedule); else its seed,
    and how many experiments ran at once when more than one did (an MTTR measured beside others
    carries their contention)."""
    mttr = "none" if r.mttr_s is None else f"{r.mttr_s:.3f}s"
    verdict = "held" if r.held else "FAILED: " + "; ".join(r.failures)
    origin = r.details.get("origin") or f"seed {r.details.get('seed')}"
    if int(r.details.get("lanes") or 1) > 1:
        origin += f", {r.details['lanes']} lanes"
    return f"{r.experiment} ({origin}): {verdict}; mttr={mttr}; lost={r.lost}"


@dataclass(frozen=True)
class Experiment:
    name: str
    hypothesis: str
    injection: str
    target_mttr_s: float  # ours, tighter than the user's bar; reported, not a verdict
    run: Callable[..., Result]  # run(harness, rng, **bounds) -> Result
    needs_fake_bybit: bool = False

    def __call__(self, harness: Any, seed: int, **bounds: Any) -> Result:
        try:
            return self.run(harness, random.Random(seed), **bounds)
        except Exception as exc:  # the harness itself failed: that is a failed hypothesis too
            return Result(self.name, False, None, 0, {"seed": seed},
                          [f"experiment aborted: {type(exc).__name__}: {exc}"])
