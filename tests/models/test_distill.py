"""Distillation (models.distill): the no-look-ahead alignment, and the pipeline on a real lake.

The lake holds the sim market's 1m candles written as day files and resampled to 5m and 1h by
the lake itself, as the datasets service does; the teacher is a real lstm run at 1h, the
student a real ddqn on the 5m bars, both exported and written as receipts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artifacts import run_dir
from models.distill import distill_group, distill_setup
from models.distill_align import BAR_MS, HOUR_MS, align_teacher, last_closed_hour
from models.serving import OnnxModel

from .test_training import SYMBOLS, fill_lake

START = 1_700_000_000_000 // HOUR_MS * HOUR_MS


@settings(max_examples=200, deadline=None)
@given(hours=st.integers(1, 60), offsets=st.lists(st.integers(-2 * HOUR_MS, 70 * HOUR_MS),
                                                 min_size=1, max_size=50),
       gaps=st.sets(st.integers(0, 59), max_size=10))
def test_a_bar_sees_only_the_last_closed_hour(hours: int, offsets: list[int],
                                              gaps: set[int]) -> None:
    """For any 5m bar (any open time, hours missing here and there), the hour whose
    probabilities it gets closed at or before the bar's close, and no later hour has."""
    hour_open = np.array([START + h * HOUR_MS for h in range(hours) if h not in gaps] or [START],
                         dtype=np.int64)
    bars = np.array(sorted(START + (o // BAR_MS) * BAR_MS for o in offsets), dtype=np.int64)
    probs = np.column_stack([np.arange(len(hour_open)), np.zeros(len(hour_open)),
                             np.ones(len(hour_open))]).astype(np.float32)
    at = last_closed_hour(bars, hour_open)
    got = align_teacher(bars, hour_open, probs)
    for bar, i, row in zip(bars, at, got):
        decided = bar + BAR_MS
        closed = hour_open[hour_open + HOUR_MS <= decided]
        if len(closed) == 0:
            assert i == -1 and np.isnan(row).all()
        else:
            assert hour_open[i] == closed.max()
            assert hour_open[i] + HOUR_MS <= decided
            assert row[0] == i


def test_the_hour_a_bar_falls_in_is_used_only_from_its_last_bar() -> None:
    hour_open = np.array([START, START + HOUR_MS], dtype=np.int64)
    bars = START + HOUR_MS + np.arange(12, dtype=np.int64) * BAR_MS  # the second hour's bars
    at = last_closed_hour(bars, hour_open)
    assert list(at) == [0] * 11 + [1]  # its own hour only once the last bar closes it


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    fill_lake(state, days=30)
    seen: list[dict] = []
    setup = distill_setup(episodes=3, episode_bars=128, updates=8, teacher_epochs=1,
                          teacher_lookback=16, folds=2, window_days=30, device="auto", weight=1.0)
    out = distill_group(state, "t1-a", SYMBOLS, setup, teacher_run_id="d-teacher",
                        student_run_id="d-student", tags={"trigger": "test"},
                        progress=seen.append)
    return state, out, seen


def test_the_student_names_its_1h_lstm_teacher(distilled) -> None:
    state, out, seen = distilled
    teacher, student = out["teacher"], out["student"]
    assert (teacher["kind"], teacher["timeframe"]) == ("lstm", "1h")
    assert (student["kind"], student["timeframe"]) == ("ddqn", "5m")
    assert student["parent_run_id"] == "d-teacher" and teacher["parent_run_id"] is None
    assert teacher["device"] == student["device"] == "cpu"  # auto without CUDA
    assert student["tags"]["role"] == "student" and teacher["tags"]["role"] == "teacher"
    metrics = student["metrics"]
    assert len(metrics["folds"]) == 2 and np.isfinite(metrics["wf_score"])
    assert 0.0 <= metrics["teacher_agreement"] <= 1.0
    on_disk = json.loads((run_dir(state, "d-student") / "result.json").read_text())
    assert on_disk["parent_run_id"] == "d-teacher"
    phases = [p["phase"] for p in seen]
    assert phases[0] == "teacher" and phases[-1] == "done"
    episodes = [p for p in seen if p["phase"] == "student"]
    assert episodes and all("agreement" in p and "loss" in p for p in episodes)
    assert [p["percent"] for p in episodes] == sorted(p["percent"] for p in episodes)


def test_the_students_graph_is_its_q_softmax(distilled) -> None:
    """The exported student, as serving loads it, gives softmax(Q/T) of the torch net."""
    state, out, _ = distilled
    from models.kinds.base import TrainedModel  # noqa: F401 (the kinds register on import)

    model = OnnxModel(state / out["student"]["onnx_path"], providers=["CPUExecutionProvider"])
    assert model.kind == "ddqn" and model.lookback == 1
    x = np.random.default_rng(0).normal(size=(64, 1, model.n_features)).astype(np.float32)
    probs = model.predict(x)
    assert probs.shape == (64, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_second_call_returns_the_receipts_without_training(distilled) -> None:
    state, out, _ = distilled
    again = distill_group(state, "t1-a", SYMBOLS, distill_setup(), teacher_run_id="d-teacher",
                          student_run_id="d-student")
    assert again["student"]["onnx_sha256"] == out["student"]["onnx_sha256"]
    assert again["teacher"]["onnx_sha256"] == out["teacher"]["onnx_sha256"]


def test_the_distill_job_reports_both_runs_on_the_bus(distilled) -> None:
    """The huey job (immediate mode, in this process) as `run` queues it: its runs show on
    the bus as the Training screen reads them (here both already trained: nothing twice)."""
    from appliance.bus import Bus
    from appliance.jobs import TRAINING_PREFIX, Jobs
    from appliance.paths import StatePaths

    state, out, _ = distilled
    jobs = Jobs(state)
    jobs.huey.immediate = True
    try:
        result = jobs.enqueue("distill", "t1-a", SYMBOLS, distill_setup(), "d-teacher",
                              "d-student", {"trigger": "distill"})()
    finally:
        jobs.close()
    assert result["student"]["parent_run_id"] == "d-teacher"
    with Bus(StatePaths(state).bus) as bus:
        teacher = bus.cache.get(f"{TRAINING_PREFIX}d-teacher")
        student = bus.cache.get(f"{TRAINING_PREFIX}d-student")
    assert (teacher["kind"], teacher["timeframe"], teacher["status"]) == ("lstm", "1h",
                                                                         "completed")
    assert (student["kind"], student["timeframe"], student["status"]) == ("ddqn", "5m",
                                                                         "completed")
    assert student["agreement"] == out["student"]["metrics"]["teacher_agreement"]
