"""The ``report`` command while ``run`` holds DuckDB: the CLI and TUI cannot open the file, so
:func:`appliance.report.fetch_report` asks through the bus and run's operator service (with the
handlers run registers) answers from its own connection. Real bus, real DuckDB."""

from __future__ import annotations

import pytest
import trio

from appliance.lifecycle import Lifecycle
from appliance.liveness import RunLock
from appliance.notify import Notifier
from appliance.report import UnknownModel, fetch_report
from appliance.services import operator, trading
from appliance.supervisor import command_handlers
from tests.builders import reported_model


@pytest.mark.trio
async def test_a_running_appliance_answers_the_report_through_the_bus(make_ctx,
                                                                     state_dir) -> None:
    """While run holds DuckDB, fetch_report sends the `report` command and run's operator
    service (with the handlers run registers) answers it from its own connection."""
    model_id = reported_model(state_dir)
    ctx = make_ctx()
    notifier = Notifier(ctx.bus, None)

    handlers = command_handlers(ctx, trading.TradingEngine(ctx), notifier,
                                Lifecycle(ctx.store, ctx.bus, notifier, state_dir))
    answers: list = []

    async def ask(model: str) -> None:
        try:
            answers.append(await trio.to_thread.run_sync(
                lambda: fetch_report(state_dir, model, curve_points=2, deadline_s=20)))
        except UnknownModel as exc:
            answers.append(exc)

    with RunLock(state_dir):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, model_id)
            nursery.start_soon(ask, "m-nope")
            with trio.fail_after(20):
                while len(answers) < 2:
                    while (cmd := ctx.bus.pop_command()) is not None:
                        await operator.execute(ctx, cmd, handlers)
                    await trio.sleep(0.05)
    report = next(a for a in answers if isinstance(a, dict))
    missing = next(a for a in answers if isinstance(a, UnknownModel))
    assert report["model"]["model_id"] == model_id and len(report["books"]) == 2
    assert report["books"][0]["curve"]["equity"] == [1000.0, 990.0, 1050.0]  # ends, trough
    assert "'m-nope'" in str(missing)
    audited = [e["action"] for e in ctx.bus.audit_entries()]
    assert audited.count("command:report") == 2
