"""``methtrader report MODEL_ID`` as an operator runs it: a real subprocess on a real state dir
(a model that went candidate → shadow → prod, with both books), text, --html, --json, and the
one-line errors for a wrong model id, state dir or output folder."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from tests.builders import reported_model
from tests.e2e.conftest import methtrader
from tests.e2e.safety_helpers import one_error_line

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def state(tmp_path: Path) -> tuple[Path, str]:
    state_dir = tmp_path / "state"
    return state_dir, reported_model(state_dir)


def test_the_text_report_shows_folds_costs_and_the_books_side_by_side(state) -> None:
    state_dir, model_id = state
    out = methtrader("report", model_id, "--state-dir", str(state_dir))
    text = out.stdout
    assert text.startswith(f"model {model_id}  rf  group t1-a  timeframe 5m  mode prod")
    side = next(line for line in text.splitlines() if "validation" in line and "prod" in line)
    assert side.split()[0::2] == ["validation", "2026-05-28", "2026-06-04"]
    trades = next(line for line in text.splitlines() if line.strip().startswith("trades "))
    assert trades.split() == ["trades", "63", "25", "12"]
    folds = [line.split()[:4] for line in text.splitlines()
             if re.match(r"\s+\d\s+2026-\d\d-\d\d\s+2026-", line)]
    assert folds == [["1", "2026-04-28", "2026-05-05", "1.50"],
                     ["2", "2026-05-05", "2026-05-12", "0.50"],
                     ["3", "2026-05-12", "2026-05-19", "1.00"]]
    assert "DOGEUSDT" in text and "no: the spread" in text


def test_html_writes_one_page_with_svg_plots_naming_the_model(state, tmp_path) -> None:
    state_dir, model_id = state
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    out = methtrader("report", model_id, "--html", str(page), "--state-dir", str(state_dir))
    assert f"written to {page}" in out.stdout
    html = page.read_text()
    assert html.count("<svg") == 3 and f"Model {model_id}" in html
    assert stat.S_IMODE(page.stat().st_mode) & 0o077 == 0  # the operator's data, theirs alone
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temp file left


def test_json_is_the_report_alone_on_stdout(state) -> None:
    state_dir, model_id = state
    data = json.loads(methtrader("report", model_id, "--json", "--state-dir",
                                 str(state_dir)).stdout)
    assert [b["mode"] for b in data["books"]] == ["shadow", "prod"]
    assert len(data["books"][1]["curve"]["equity"]) == 50  # capital + 49 bars, all kept
    assert len(data["walk_forward"]["folds"]) == 3


def test_an_unknown_model_is_one_line_naming_it_and_exit_2(state) -> None:
    state_dir, _ = state
    out = methtrader("report", "m-nope", "--state-dir", str(state_dir), check=False)
    line = one_error_line(out, 2)
    assert "'m-nope'" in line and "methtrader models" in line
    assert out.stdout == ""


def test_a_missing_state_dir_or_html_folder_is_one_line_and_exit_2(state, tmp_path) -> None:
    state_dir, model_id = state
    line = one_error_line(methtrader("report", model_id, "--state-dir",
                                     str(tmp_path / "nowhere"), check=False), 2)
    assert str(tmp_path / "nowhere") in line and "--state-dir" in line
    missing = tmp_path / "no-such-folder" / "r.html"
    line = one_error_line(methtrader("report", model_id, "--html", str(missing),
                                     "--state-dir", str(state_dir), check=False), 2)
    assert str(missing.parent) in line and not missing.parent.exists()
