"""``methtrader bench distill``: a group's teacher and student on 90 days, as the weekly job runs.

Budget (issue 14): teacher + student for one group on 90 days in < 10 min on 2 CPU cores. The
group is three symbols of the sim market (its learnable drift), 90 days of 5m bars in a lake
with their 1h bars beside them; the distillation runs with the ``[distill]`` and ``[training]``
defaults (4 walk-forward folds each for the teacher and the student, then their refits). It
reports the wall time of each and the process's CPU time (on a shared machine the CPU seconds
say more than the wall clock), their walk-forward scores, the student's agreement with the teacher
on its held-out bars, and the device torch trained on (``--device``: auto by default).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config
from appliance.distill import setup_of
from appliance.paths import StatePaths
from data.lake import Lake, to_table, write_table_atomic
from models.distill import distill_group
from models.honesty import sim_drift, write_lake

BUDGET_S = 10 * 60
SYMBOLS = ("SOLUSDT", "DOGEUSDT", "AVAXUSDT")
DAYS = 90


def write_hourly(lake: Lake, candles: dict[str, np.ndarray]) -> None:
    """The 1h bars of 5m candles, where the lake's resample puts them."""
    for symbol, rows in candles.items():
        b = rows[:len(rows) // 12 * 12].reshape(-1, 12, 7)
        hourly = np.column_stack([b[:, 0, 0], b[:, 0, 1], b[:, :, 2].max(axis=1),
                                  b[:, :, 3].min(axis=1), b[:, -1, 4], b[:, :, 5].sum(axis=1),
                                  b[:, :, 6].sum(axis=1)])
        write_table_atomic(to_table(hourly), lake.dir("1h", symbol) / "data.parquet")


def run(device: str = "auto") -> dict[str, Any]:
    candles = sim_drift(0, symbols=SYMBOLS, days=DAYS)
    setup = {**setup_of(Config()), "device": device}
    times: dict[str, float] = {}
    marks = {"start": time.perf_counter()}
    cpu = {"start": time.process_time()}

    def progress(p: dict[str, Any]) -> None:
        if p["phase"] == "student" and "student" not in marks:
            marks["student"] = time.perf_counter()
            cpu["student"] = time.process_time()

    with tempfile.TemporaryDirectory() as d:
        lake = Lake(StatePaths(Path(d)).lake)
        write_lake(lake, candles)
        write_hourly(lake, candles)
        out = distill_group(Path(d), "bench", list(SYMBOLS), setup, teacher_run_id="teacher",
                            student_run_id="student", progress=progress)
        end = time.perf_counter()
        cpu_end = time.process_time()
    times["teacher"] = marks.get("student", end) - marks["start"]
    times["student"] = end - marks.get("student", end)
    teacher, student = out["teacher"], out["student"]
    total = times["teacher"] + times["student"]
    return {
        "group": f"{len(SYMBOLS)} symbols x {DAYS} days (5m student, 1h teacher)",
        "device": student["device"],
        "teacher_s": round(times["teacher"], 1),
        "student_s": round(times["student"], 1),
        "total_s": round(total, 1),
        "teacher_cpu_s": round(cpu.get("student", cpu_end) - cpu["start"], 1),
        "student_cpu_s": round(cpu_end - cpu.get("student", cpu_end), 1),
        "budget_s": BUDGET_S,
        "within_budget": total < BUDGET_S,
        "teacher_wf_score": round(teacher["metrics"]["wf_score"], 2),
        "student_wf_score": round(student["metrics"]["wf_score"], 2),
        "student_trades": student["metrics"]["trades"],
        "student_teacher_agreement": round(student["metrics"]["teacher_agreement"], 3),
        "student_episodes_per_fit": setup["episodes"],
        "distill_weight": setup["weight"],
    }
