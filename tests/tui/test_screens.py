"""Each screen renders the fixture data from the bus, and live events move it."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Digits, Sparkline

from tests.tui.conftest import (MARKET_T0, TRADES, make_app, run_scenario, switch_to, trade,
                                wait_for)
from tests.tui.helpers import cell, publish, rows, text
from appliance.bus import Bus
from tui.screens.dashboard import DashboardScreen
from tui.screens.training import compute_device
from tui.widgets.cards import NumberCard, TextCard

pytestmark = pytest.mark.timeout(60)


def test_dashboard_shows_money_models_switches_sources_and_services(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        assert screen.query_one("#equity Digits", Digits).value == "10,234.56"
        assert screen.query_one("#daily-pnl Digits", Digits).value == "-182.40"
        assert screen.query_one("#daily-pnl").has_class("down")
        assert screen.query_one("#sharpe Digits", Digits).value == "1.87"
        assert screen.query_one("#sharpe").has_class("up")
        assert screen.query_one("#trades Digits", Digits).value == "1,284"
        assert text(app, "#models .value") == "prod 3   shadow 5"
        maintenance = screen.query_one("#maintenance", TextCard)
        assert text(app, "#maintenance .value") == "OFF — trading"
        assert maintenance.has_class("off") and maintenance.border_subtitle == "alice: drill over"
        deploys = screen.query_one("#deploys", TextCard)
        assert text(app, "#deploys .value") == "FROZEN" and deploys.has_class("warn")
        assert deploys.border_subtitle == "bob: release freeze"
        assert rows(app, "#sources") == [
            ["bybit-rest", "1.2 s", "0", "97%", "ok"], ["bybit-ws", "0.4 s", "3", "—", "ok"],
            ["lake", "75.0 s", "12", "81%", "DEGRADED"]]
        services = rows(app, "#services")
        assert len(services) == 11
        assert ["drift", "backoff", "3", "ValueError: empty referen…"] in services
        assert screen.query_one("#services").border_subtitle == \
            "11 services · 6 restarts · 0 failed"
        assert not screen.query_one("#banner").display
        assert "● DEGRADED  pid 4242 · sim ×60 · market 2024-06-01 13:00 UTC" in \
            text(app, "#statusbar")

    run_scenario(app, scenario)


def test_dashboard_follows_the_bus_live(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        from appliance.bus import Bus
        with Bus(bus_state / "bus") as bus:
            status = bus.snapshot("status")
            bus.put_snapshot("status", {**status, "equity": 9999.5, "daily_pnl": 0})
        await wait_for(lambda: app.screen.query_one("#equity Digits", Digits).value == "9,999.50")
        daily = app.screen.query_one("#daily-pnl", NumberCard)
        assert not daily.has_class("up") and not daily.has_class("down")

    run_scenario(app, scenario)


def test_an_update_landing_while_a_screen_is_torn_down_does_not_crash_it(bus_state: Path) -> None:
    """CI caught this race: the bus worker posted an update while the app was closing and the
    Models screen's widgets were already removed; the query raised and failed the app. Such an
    update is skipped and the screen re-renders everything on the next one."""
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "5", "models")
        screen = app.screen
        await screen.query_one("#models-summary").remove()
        screen.show(app.state, frozenset({"models"}))
        assert screen.shown_version == -1
        from appliance.bus import Bus
        with Bus(bus_state / "bus") as bus:
            bus.put_snapshot("models", [{"model_id": "m-new", "mode": "shadow"}])
        await wait_for(lambda: app.state.models and app.state.models[0].get("model_id") == "m-new")
        await pilot.pause()
        assert app.return_code is None and not app._exception

    run_scenario(app, scenario)


def test_trade_feed_is_a_50_row_blotter_newest_first_with_coloured_pnl(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "2", "trades")
        blotter = rows(app, "#blotter")
        assert len(blotter) == 50
        newest = trade(TRADES - 1)
        assert blotter[0] == ["2024-06-01 12:59:00", newest["symbol"], newest["side"], "0.6000",
                              "173.7500", "+7.50", newest["model_id"], "prod"]
        times = [row[0] for row in blotter]
        assert times == sorted(times, reverse=True)
        assert blotter[-1][0] == "2024-06-01 12:10:00"  # trade 10: the oldest 10 rolled off
        styles = {str(cell(app, "#blotter", i, 5)): cell(app, "#blotter", i, 5).style
                  for i in range(50)}
        assert styles["+7.50"] == "green" and styles["-4.50"] == "red"

        for i in range(TRADES, TRADES + 7):
            publish(bus_state, "trade", trade(i), market_ts=MARKET_T0 + i * 60)
        await wait_for(lambda: rows(app, "#blotter")[0][0] == "2024-06-01 13:06:00")
        blotter = rows(app, "#blotter")
        assert len(blotter) == 50
        assert [row[0] for row in blotter[:3]] == [
            "2024-06-01 13:06:00", "2024-06-01 13:05:00", "2024-06-01 13:04:00"]
        assert blotter[-1][0] == "2024-06-01 12:17:00"

    run_scenario(app, scenario)


def test_training_shows_runs_progress_kinds_device_and_the_loss_curve(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "3", "training")
        runs = rows(app, "#runs")
        assert [r[0] for r in runs] == ["r-lstm-btc", "r-ens-all", "r-mlp-xrp", "r-ddqn-sol",
                                        "r-rf-eth"]
        assert [r[2] for r in runs] == ["LSTM", "ensemble", "MLP", "DDQN", "RF"]
        assert [r[4] for r in runs] == ["running", "queued", "queued", "failed", "completed"]
        assert runs[0][5].endswith(" 40.0%") and runs[4][5].endswith("100.0%")
        assert runs[2][5] == "—" and runs[1][1] == "BTCUSDT,ETHUSDT,SOLUSDT +3"
        assert runs[4][3] == "1h" and runs[4][8] == "0.80"  # timeframe, walk-forward score
        assert "Walk-forward: no folds yet" in text(app, "#folds")
        assert text(app, "#training-summary").startswith("Trained on: CPU, CUDA")
        assert runs[0][9] == "cuda" and runs[4][9] == "cpu"  # as each run recorded it
        assert app.screen.query_one("#loss-curve", Sparkline).data == [0.95, 0.81, 0.70, 0.612]
        assert "r-lstm-btc (LSTM): 4 epochs" in text(app, "#loss-title")

        publish(bus_state, "training_progress", {
            "run_id": "r-lstm-btc", "model_id": "m010", "group": "BTCUSDT", "kind": "lstm",
            "epoch": 5, "loss": 0.55, "percent": 50.0, "status": "running"})
        await wait_for(lambda: rows(app, "#runs")[0][5].endswith(" 50.0%"))
        assert app.screen.query_one("#loss-curve", Sparkline).data[-1] == 0.55

        await pilot.press("down", "down", "down")
        await wait_for(lambda: "r-ddqn-sol" in text(app, "#loss-title"))
        assert app.screen.query_one("#loss-curve", Sparkline).data == [1.3, 1.7]
        await pilot.press("down")
        await wait_for(lambda: "r-rf-eth" in text(app, "#loss-title"))
        assert text(app, "#folds") == ("Walk-forward 2 folds  1: 2.00 (31 tr)  2: 0.40 (27 tr)"
                                       "  ·  mean 1.20  std 0.80  score 0.80")

        # a run the group's history was too short for: skipped, and the reason shown
        publish(bus_state, "training_progress", {
            "run_id": "r-rf-new", "group": "SOLUSDT", "kind": "rf", "epoch": None,
            "loss": None, "percent": 0.0, "status": "skipped",
            "error": "180 5m bars of history; 4 walk-forward folds need about 1100"})
        await wait_for(lambda: ["r-rf-new", "skipped"] in [[r[0], r[4]]
                                                          for r in rows(app, "#runs")])
        assert [r[0] for r in rows(app, "#runs")][-2:] == ["r-rf-new", "r-rf-eth"]
        await pilot.press("up")
        await wait_for(lambda: "r-rf-new skipped: 180 5m bars of history; 4 walk-forward "
                               "folds need about 1100" in text(app, "#loss-title"))

    run_scenario(app, scenario)


def test_training_shows_the_weekly_automl_studies_and_their_trial_values(bus_state: Path
                                                                         ) -> None:
    with Bus(bus_state / "bus") as bus:
        bus.put_snapshot("automl", [
            {"group": "t1-a", "study": "t1-a-2026-W48", "budget": 50, "done": 2, "pruned": 0,
             "best": 1.5, "values": [1.5, -0.2], "state": "done", "passed": True,
             "reason": "hold-out DSR 0.981 > 0.95 over 2 trials",
             "run_id": "automl-t1-a-2026-W48-t0"},
            {"group": "t2-a", "study": "t2-a-2026-W48", "budget": 50, "done": 12, "pruned": 4,
             "best": 3.25, "values": [0.5, 3.25, -1.0], "state": "searching", "passed": None,
             "reason": None, "run_id": None}])
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "3", "training")
        await wait_for(lambda: "t2-a-2026-W48" in text(app, "#studies"))
        assert text(app, "#studies").splitlines() == [
            "AutoML t1-a-2026-W48: 2/50 trials, 0 pruned, best 1.50  ·  candidate "
            "automl-t1-a-2026-W48-t0: hold-out DSR 0.981 > 0.95 over 2 trials",
            "AutoML t2-a-2026-W48: 12/50 trials, 4 pruned, best 3.25  ·  searching"]
        # the plot follows the study still searching
        assert app.screen.query_one("#study-values", Sparkline).data == [0.5, 3.25, -1.0]

    run_scenario(app, scenario)


def test_compute_device_is_what_the_runs_recorded() -> None:
    assert compute_device(({"device": "cpu"}, {"device": None}, {})) == "CPU"
    assert compute_device(({"device": "cpu"}, {"device": "cuda"})) == "CPU, CUDA"
    assert compute_device(({}, {"device": None})) == "—"


def fake_nvidia_smi(folder: Path) -> Path:
    """An ``nvidia-smi`` that answers the query as a machine with one H200 would."""
    folder.mkdir()
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho '0, NVIDIA H200, 37, 2048, 143771'\n")
    exe.chmod(0o755)
    return folder


def test_training_shows_gpu_load_only_where_there_is_a_gpu(bus_state: Path, tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "bin")))
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "3", "training")
        await wait_for(lambda: app.screen.query_one("#gpu").display
                       and "H200" in text(app, "#gpu"))
        assert text(app, "#gpu") == "GPU 0 NVIDIA H200: 37% busy · memory 2.0 / 140.4 GiB"

    run_scenario(app, scenario)


def test_training_shows_nothing_gpu_related_without_a_gpu(bus_state: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi to ask
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "3", "training")
        await wait_for(lambda: rows(app, "#runs"))
        await wait_for(lambda: app.screen.gpu_polls >= 1)  # nvidia-smi was looked for
        assert not app.screen.query_one("#gpu").display
        shown = " ".join(str(w.content) for w in app.screen.query("Static"))
        assert "GPU" not in shown and "NVIDIA" not in shown

    run_scenario(app, scenario)


def test_pipeline_shows_sources_backfill_discovery_and_health(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "4", "pipeline")
        assert text(app, "#pipeline-health").startswith(" DEGRADED — lake ")
        assert "missing candles 12 · cache hit rate 91%" in text(app, "#pipeline-health")
        assert rows(app, "#pipe-sources")[2] == ["lake", "75.0 s", "12", "81%", "DEGRADED"]
        backfill = {r[0]: r for r in rows(app, "#backfill")}
        assert backfill["SOLUSDT"][1].endswith(" 64.5%") and backfill["SOLUSDT"][2] == "10"
        assert backfill["DOGEUSDT"][2] == "—"
        assert [r[1:] for r in rows(app, "#discovery")] == [
            ["DOGEUSDT", "crossed_bar"], ["LUNAUSDT", "delisted"], ["AVAXUSDT", "listed"]]

        publish(bus_state, "pair_event", {"symbol": "NEWUSDT", "event": "listed"},
                market_ts=MARKET_T0)
        publish(bus_state, "data_source_update", {
            "source": "bybit-rest", "symbols": ["SOLUSDT"], "candles": 10, "lag_s": 9.5,
            "percent": 80.0})
        await wait_for(lambda: rows(app, "#discovery")[0][1] == "NEWUSDT")
        await wait_for(lambda: rows(app, "#pipe-sources")[0][1] == "9.5 s")
        assert rows(app, "#discovery")[0] == ["2024-06-01 12:00:00", "NEWUSDT", "listed"]
        assert {r[0]: r for r in rows(app, "#backfill")}["SOLUSDT"][1].endswith(" 80.0%")

    run_scenario(app, scenario)


def test_models_leaderboard_puts_prod_then_shadow_and_hides_archived(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "5", "models")
        board = rows(app, "#leaderboard")
        assert [r[0] for r in board] == ["m000", "m001", "m002", "m003", "m004", "m006"]
        assert board[0] == ["m000", "BTCUSDT", "LSTM", "prod", "06-01 12:00", "1.92", "+812.50",
                            "7.0", "412", "1,650", "0.0031", "yes", ""]
        assert board[4] == ["m004", "XRPUSDT", "MLP", "candidate", "—", "—", "—", "—", "—", "—",
                            "—", "", ""]
        assert board[2][-1] == "automl"  # found by an AutoML study
        assert board[3][-1] == "distilled"  # a student, taught by m000
        assert text(app, "#models-summary").startswith(
            "prod 3 · shadow 5 · candidate 2 · retired 1 · rejected 4 · archived 7")

    run_scenario(app, scenario)


def test_models_screen_names_a_students_teacher(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "5", "models")
        await wait_for(lambda: "Parent of m000" in text(app, "#model-parent"))
        assert text(app, "#model-parent") == ("Parent of m000: none (trained from the data "
                                              "alone)")
        await pilot.press("down", "down", "down")  # m003, the ddqn student
        await wait_for(lambda: "m003" in text(app, "#model-parent"))
        assert text(app, "#model-parent") == ("Parent of m003: m000 (teacher run r000; "
                                              "LSTM 1h, prod)")

    run_scenario(app, scenario)


def test_incidents_show_crashes_chaos_mttr_and_kill_switch_history(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "6", "incidents")
        assert text(app, "#incidents-summary") == (
            "crashes 1 · restarts 1 · failed 0 · chaos 2 (MTTR mean 1.2 s, max 1.6 s)")
        incidents = rows(app, "#incidents")
        assert [r[2] for r in incidents] == ["chaos", "chaos", "restart", "crash"]
        assert incidents[0][1:] == ["datasets", "chaos", "chaos: disk full on lake write", "1.6 s"]
        history = rows(app, "#switch-history")
        assert [r[1:] for r in history] == [
            ["bob", "deploys_frozen=on", "release freeze", "cli"],
            ["alice", "maintenance_mode=off", "drill over", "cli"],
            ["alice", "maintenance_mode=on", "drill", "cli"]]

        publish(bus_state, "incident", {"service": "risk", "kind": "failed",
                                        "message": "restart budget spent"}, market_ts=MARKET_T0)
        await wait_for(lambda: rows(app, "#incidents")[0][1] == "risk")
        assert rows(app, "#incidents")[0] == ["2024-06-01 12:00:00", "risk", "failed",
                                             "restart budget spent", "—"]
        assert "failed 1" in text(app, "#incidents-summary")

    run_scenario(app, scenario)
