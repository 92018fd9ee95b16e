"""A group's distillation on the appliance's state dir (:mod:`models.distill`), from the config.

Run ids: ``distill-<tag>-<group>-lstm-1h`` (the teacher) and ``distill-<tag>-<group>-ddqn``
(the student), where the tag is the ISO week for the weekly job inside ``run`` (one pair per
group and week: a job that runs twice trains nothing twice) and ``manual-<UTC stamp>`` for
``methtrader distill``. What the weekly schedule queued is kept in
``<state>/distill/schedule.json``. ``methtrader distill`` registers the teacher and the student
as candidates itself when ``run`` is down (else ``run``'s training service does, from their
receipts).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data.files import read_json_dict, write_json_atomic
from appliance.config import Config
from models.distill import distill_setup

SCHEDULE_DIR = "distill"


def setup_of(cfg: Config) -> dict[str, Any]:
    """:func:`models.distill.distill_setup` from the config."""
    d = cfg.distill
    return distill_setup(temperature=d.temperature, weight=d.weight, episodes=d.episodes,
                         episode_bars=d.episode_bars, updates=d.updates,
                         teacher_epochs=d.teacher_epochs,
                         teacher_lookback=d.teacher_lookback, window_days=d.window_days,
                         folds=cfg.training.folds, threshold=cfg.trading.threshold,
                         taker_fee=cfg.sim.taker_fee, slippage=cfg.sim.slippage_bps / 10_000,
                         seed=d.seed, device=cfg.training.device)


def week_tag(now: float) -> str:
    year, week, _ = datetime.fromtimestamp(now, timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def run_ids(tag: str, group: str) -> tuple[str, str]:
    """(teacher run id, student run id) of a group's distillation."""
    return f"distill-{tag}-{group}-lstm-1h", f"distill-{tag}-{group}-ddqn"


def schedule_path(state_dir: Path) -> Path:
    return Path(state_dir) / SCHEDULE_DIR / "schedule.json"


def load_schedule(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each group's latest weekly distillation: its market start and run ids."""
    return read_json_dict(schedule_path(state_dir))


def save_schedule(state_dir: Path, schedule: dict[str, dict[str, Any]]) -> None:
    write_json_atomic(schedule_path(state_dir), schedule)


def _summary(receipt: dict[str, Any]) -> dict[str, Any]:
    from models.registry import model_id_of

    metrics = receipt.get("metrics") or {}
    return {"run_id": receipt["run_id"], "model_id": model_id_of(receipt["run_id"]),
            "parent_run_id": receipt.get("parent_run_id"), "kind": receipt["kind"],
            "timeframe": receipt["timeframe"], "wf_score": metrics.get("wf_score"),
            "sharpe": metrics.get("sharpe"),
            "teacher_agreement": metrics.get("teacher_agreement"),
            "device": receipt.get("device"), "onnx_path": receipt.get("onnx_path")}


def register_receipts(cfg: Config, receipts: list[dict[str, Any]], actor: str) -> bool:
    """Register runs as candidates through the lifecycle when ``run`` does not hold DuckDB
    (else its training service registers them from their folders); whether this did."""
    import time as _time

    from appliance.bus import Bus
    from appliance.commands import _offline_lifecycle
    from appliance.lifecycle import register
    from appliance.paths import StatePaths
    from appliance.store import Store, StoreError

    try:
        store = Store(StatePaths(cfg.state_path).duckdb)
    except StoreError:
        return False
    try:
        with Bus(StatePaths(cfg.state_path).bus, events_maxlen=cfg.bus.events_maxlen) as bus:
            life = _offline_lifecycle(cfg, store, bus)
            for r in receipts:
                life.publish(register(store, r, now=_time.time(), actor=actor))
    finally:
        store.close()
    return True


def distill_groups(cfg: Config, group_names: list[str], *,
                   progress: Callable[[dict[str, Any]], None] | None = None
                   ) -> list[dict[str, Any]]:
    """``methtrader distill``: each group's teacher and student in the foreground, both
    registered as candidates (the teacher first); one summary per group."""
    import time as _time

    from appliance.commands import lake_groups, with_absolute_paths
    from models.distill import distill_group

    groups = lake_groups(cfg, group_names)
    tag = "manual-" + _time.strftime("%Y%m%d-%H%M%S", _time.gmtime())
    setup = setup_of(cfg)
    out = []
    for group in groups:
        teacher_id, student_id = run_ids(tag, group.name)
        try:
            runs = distill_group(cfg.state_path, group.name, list(group.symbols), setup,
                                 teacher_run_id=teacher_id, student_run_id=student_id,
                                 tags={"trigger": "manual"}, progress=progress)
        except ValueError as exc:
            raise ValueError(
                f"group {group.name} cannot be distilled: {exc}; backfill more days, or lower "
                "training.folds or distill.teacher_lookback (the 1h teacher needs "
                f"{cfg.training.folds + 1} test blocks of 1h bars)") from None
        register_receipts(cfg, [runs["teacher"], runs["student"]], actor="distill")
        teacher, student = with_absolute_paths(cfg, [_summary(runs["teacher"]),
                                                     _summary(runs["student"])])
        out.append({"group": group.name, "teacher": teacher, "student": student})
    return out


@contextmanager
def progress_bar(show: bool) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A rich progress bar on stderr (``--json`` stdout stays clean): a line per group and
    phase with the student's episodes, loss and agreement with the teacher; None when not
    shown."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    bar = Progress(TextColumn("{task.description:<22}"), BarColumn(),
                   TextColumn("{task.percentage:>5.1f}%  {task.fields[info]}"),
                   console=Console(file=sys.stderr))
    tasks: dict[tuple[str, str], Any] = {}

    def update(p: dict[str, Any]) -> None:
        phase = "teacher" if p["phase"] == "teacher" else "student"
        key = (p["group"], phase)
        if key not in tasks:
            tasks[key] = bar.add_task(f"{p['group']} {phase} "
                                      f"{'1h lstm' if phase == 'teacher' else '5m ddqn'}",
                                      total=100, info="")
        info = ""
        if p["phase"] == "student":
            agree = p.get("agreement")
            info = (f"fold {p['fold']}/{p['folds']}  episode {p['episode']}/{p['episodes']}  "
                    f"loss {p['loss']:.4f}  agreement "
                    + ("-" if agree is None else f"{agree:.2f}"))
        elif p["phase"] == "done":
            info = f"agreement with the teacher {_fmt(p.get('agreement'))}"
        bar.update(tasks[key], completed=p.get("percent") or 0.0, info=info)

    with bar:
        yield update


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
