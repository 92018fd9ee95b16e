"""Training: runs with progress bars, model kind and status, timeframe and walk-forward score,
the device each run actually trained on (as the run recorded it: CPU or CUDA), the selected
run's folds and loss curve, and the weekly AutoML studies (trials done and pruned, the best
walk-forward score so far, a plot of the trials' values, the verdict).

When this machine has a GPU (``nvidia-smi`` answers), a line per GPU shows its utilisation and
memory, refreshed every ``GPU_REFRESH_S`` seconds by a thread worker; without one the screen
shows nothing GPU-related."""

from __future__ import annotations

from typing import Any, Mapping

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import DataTable, Sparkline, Static

from appliance.gpu import gpu_line, gpu_stats

from tui.client import MissionState
from tui.screens.base import MissionScreen
from tui.widgets import fmt
from tui.widgets.table import fill, make_table, selected_key

STATUS_ORDER = {"running": 0, "queued": 1, "failed": 2, "skipped": 3, "completed": 4}
COLUMNS = ("Run", "Symbols", "Kind", "TF", "Status", "Progress", "Epoch", "Loss", "WF score",
           "Device")


GPU_REFRESH_S = 3.0


def compute_device(runs: tuple[Mapping[str, Any], ...]) -> str:
    """The devices the runs trained on, as they recorded them ("CPU", "CUDA", "CPU, CUDA");
    "—" before any run said."""
    used = sorted({str(r["device"]).upper() for r in runs
                   if r.get("device") and str(r["device"]).lower() != "none"})
    return ", ".join(used) if used else "—"


def _symbols(run: Mapping[str, Any]) -> str:
    symbols = run.get("symbols")
    if isinstance(symbols, (list, tuple)) and symbols:
        shown = ",".join(map(str, symbols[:3]))
        return shown + (f" +{len(symbols) - 3}" if len(symbols) > 3 else "")
    return fmt.text(run.get("group"))


def folds_line(run: Mapping[str, Any] | None) -> str:
    """The selected run's walk-forward record: each fold's Sharpe and trades, the mean, the
    dispersion and the score the lifecycle ranks by (mean − std/√K)."""
    folds = fmt.get(run, "folds") if run is not None else None
    if not isinstance(folds, (list, tuple)) or not folds:
        return "Walk-forward: no folds yet"
    parts = [f"{i + 1}: {fmt.num(f.get('sharpe'), 2)} ({fmt.integer(f.get('trades'))} tr)"
             for i, f in enumerate(folds) if isinstance(f, Mapping)]
    return (f"Walk-forward {len(parts)} folds  " + "  ".join(parts)
            + f"  ·  mean {fmt.num(fmt.get(run, 'wf_mean'), 2)}"
            f"  std {fmt.num(fmt.get(run, 'wf_std'), 2)}"
            f"  score {fmt.num(fmt.get(run, 'wf_score'), 2)}")


def study_line(study: Mapping[str, Any]) -> str:
    """One AutoML study: its progress, best so far and, once selected, its verdict."""
    head = (f"AutoML {fmt.text(study.get('study'))}: {fmt.integer(study.get('done'))}/"
            f"{fmt.integer(study.get('budget'))} trials, {fmt.integer(study.get('pruned'))} "
            f"pruned, best {fmt.num(study.get('best'), 2)}")
    state = study.get("state")
    if state == "done":
        verdict = (f"candidate {fmt.text(study.get('run_id'))}" if study.get("passed")
                   else "no candidate")
        return f"{head}  ·  {verdict}: {fmt.text(study.get('reason'))}"
    return f"{head}  ·  {fmt.text(state)}"


class TrainingScreen(MissionScreen):
    MODE = "training"

    def compose_body(self) -> ComposeResult:
        yield Static(id="training-summary", classes="summary")
        yield Static(id="gpu", classes="summary")
        yield make_table(COLUMNS, id="runs", cursor=True)
        with Vertical(id="loss-panel"):
            yield Static(id="folds")
            yield Static(id="loss-title")
            yield Sparkline([], id="loss-curve")
            yield Static(id="studies")
            yield Sparkline([], id="study-values")

    gpu_polls = 0
    """How often nvidia-smi's answer (or its absence) has been shown."""

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#gpu", Static).display = False
        self._poll_gpu()
        self.set_interval(GPU_REFRESH_S, self._poll_gpu)

    @work(thread=True, exclusive=True, group="gpu")
    def _poll_gpu(self) -> None:
        stats = gpu_stats()
        self.app.call_from_thread(self._show_gpu, stats)

    def _show_gpu(self, stats: list[dict[str, Any]]) -> None:
        """One line per GPU, or nothing at all without one."""
        try:
            widget = self.query_one("#gpu", Static)
        except NoMatches:  # the screen went away while nvidia-smi answered
            return
        widget.display = bool(stats)
        widget.update("\n".join(gpu_line(g) for g in stats))
        self.gpu_polls += 1

    def render_state(self, state: MissionState, changed: frozenset[str]) -> None:
        if "training" not in changed:
            return
        self._show_studies(state.automl)
        runs = sorted(state.training, key=lambda r: STATUS_ORDER.get(str(r.get("status")), 9))
        counts = {name: sum(r.get("status") == name for r in runs) for name in STATUS_ORDER}
        self.query_one("#training-summary", Static).update(
            f"Trained on: {compute_device(state.training)}  ·  "
            + " · ".join(f"{n} {name}" for name, n in counts.items()))
        fill(self.query_one("#runs", DataTable), ((str(r.get("run_id")), (
            fmt.text(r.get("run_id")), _symbols(r), fmt.kind(r.get("kind")),
            fmt.text(r.get("timeframe")), fmt.status(r.get("status")),
            fmt.bar(r.get("percent"), 12), fmt.integer(r.get("epoch")),
            fmt.num(r.get("loss"), 4), fmt.num(r.get("wf_score"), 2),
            fmt.text(r.get("device")))) for r in runs))
        self._show_curve()

    def _show_studies(self, studies: tuple[Mapping[str, Any], ...]) -> None:
        """A line per group's latest study; the plot is the trials' values of the first one
        still searching (else the first listed)."""
        self.query_one("#studies", Static).update(
            "\n".join(study_line(s) for s in studies) or "AutoML: no weekly study yet")
        shown = next((s for s in studies if s.get("state") == "searching"),
                     studies[0] if studies else None)
        raw = fmt.get(shown, "values") if shown is not None else None
        values = [v for v in map(fmt.as_float, raw if isinstance(raw, (list, tuple)) else [])
                  if v is not None]
        self.query_one("#study-values", Sparkline).data = values

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_curve()

    def _show_curve(self) -> None:
        key = selected_key(self.query_one("#runs", DataTable))
        run = next((r for r in self.mission.state.training if str(r.get("run_id")) == key), None)
        raw = fmt.get(run, "loss_curve")
        points = raw if isinstance(raw, (list, tuple)) else []
        curve = [v for v in map(fmt.as_float, points) if v is not None]
        self.query_one("#folds", Static).update(folds_line(run))
        title = self.query_one("#loss-title", Static)
        if run is None:
            title.update("Loss curve: no run selected")
        elif run.get("status") in ("failed", "skipped") and run.get("error"):
            title.update(f"{key} {run.get('status')}: {run.get('error')}")
        elif not curve:
            title.update(f"Loss curve of {key}: no points yet")
        else:
            title.update(f"Loss curve of {key} ({fmt.kind(run.get('kind'))}): "
                         f"{len(curve)} epochs, first {curve[0]:.4f}, last {curve[-1]:.4f}, "
                         f"min {min(curve):.4f}")
        self.query_one("#loss-curve", Sparkline).data = curve
