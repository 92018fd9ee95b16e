"""SVG snapshots of the dashboard and the trade feed at 120x40, compared with the files in
tests/tui/snapshots/. Regenerate with METHTRADER_UPDATE_SNAPSHOTS=1 (which also refreshes
docs/dashboard.svg, the screenshot the README shows).

The fixture uses fixed market timestamps and ``now`` is pinned just after the fixture's
heartbeat, so nothing in the picture depends on the wall clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.bus import Bus
from appliance.liveness import RunLock
from tests.tui.conftest import fill_bus, make_app, run_scenario, switch_to

pytestmark = pytest.mark.timeout(60)
SNAPSHOTS = Path(__file__).parent / "snapshots"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.svg"
UPDATE = os.environ.get("METHTRADER_UPDATE_SNAPSHOTS") == "1"


def screenshot(state_dir: Path, key: str, mode: str) -> str:
    with Bus(state_dir / "bus") as bus:
        beat = bus.heartbeat()["wall_ts"]
    app = make_app(state_dir, now=lambda: beat + 1.0)
    shots: list[str] = []

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, key, mode)
        await pilot.pause()
        shots.append(app.export_screenshot(title="methtrader mission control"))

    run_scenario(app, scenario, size=(120, 40))
    return shots[0]


def check(name: str, svg: str, tmp_path: Path) -> None:
    stored = SNAPSHOTS / f"{name}.svg"
    if UPDATE:
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(svg, encoding="utf-8")
        return
    assert stored.exists(), f"{stored} missing: run with METHTRADER_UPDATE_SNAPSHOTS=1"
    if svg != stored.read_text(encoding="utf-8"):
        actual = tmp_path / f"{name}.svg"
        actual.write_text(svg, encoding="utf-8")
        pytest.fail(f"{name} differs from {stored}; the new rendering is at {actual}. If the "
                    "change is intended, rerun with METHTRADER_UPDATE_SNAPSHOTS=1.")


def test_dashboard_snapshot(bus_state: Path, tmp_path: Path) -> None:
    svg = screenshot(bus_state, "1", "dashboard")
    check("dashboard", svg, tmp_path)
    if UPDATE:
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        DOCS_SCREENSHOT.write_text(svg, encoding="utf-8")


def test_trade_feed_snapshot(bus_state: Path, tmp_path: Path) -> None:
    check("trade_feed", screenshot(bus_state, "2", "trades"), tmp_path)


def test_screenshots_do_not_depend_on_the_run(bus_state: Path, tmp_path_factory) -> None:
    """Two apps over two separately filled buses draw the same picture."""

    other = tmp_path_factory.mktemp("other") / "state"
    with Bus(other / "bus") as bus:
        fill_bus(bus)
    with RunLock(other):
        assert screenshot(bus_state, "1", "dashboard") == screenshot(other, "1", "dashboard")
