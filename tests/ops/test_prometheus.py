"""ops/prometheus: the rules load and their unit tests pass in promtool, the scrape config is
valid, and what `run` exports passes promtool's metrics lint (but for the two names the user
chose, which keep their names)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.ops.conftest import OPS, families

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (install.sh --dev installs Debian's "
                             "prometheus package, which has it)")
pytestmark = pytest.mark.timeout(180)
#: the user's names from the seed; promtool would have them end otherwise
USER_NAMES = {"pairs_total", "trade_latency_ms", "trade_latency_ms_created"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], cwd=OPS / "prometheus", input=stdin,
                          capture_output=True, text=True, timeout=60)


@needs_promtool
def test_the_rules_load_and_every_alert_has_a_unit_test():
    check = promtool("check", "rules", "rules.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    alerts = set(re.findall(r"^\s+- alert: (\w+)", (OPS / "prometheus/rules.yml").read_text(),
                            re.M))
    assert len(alerts) >= 10
    tested = set(re.findall(r"alertname: (\w+)", (OPS / "prometheus/tests.yml").read_text()))
    assert alerts <= tested, f"alerts without a unit test: {alerts - tested}"
    unit = promtool("test", "rules", "tests.yml")
    assert unit.returncode == 0, unit.stdout + unit.stderr


@needs_promtool
def test_the_scrape_config_is_valid():
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_what_run_exports_passes_the_metrics_lint(scraped):
    out = promtool("check", "metrics", stdin=scraped)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert {line.split()[0] for line in problems} <= USER_NAMES, problems


def test_every_metric_a_rule_reads_is_exported(scraped):
    exported = families(scraped) | {"up"}
    rules = (OPS / "prometheus/rules.yml").read_text()
    recorded = set(re.findall(r"record: (\S+)", rules))
    exprs = re.findall(r"expr: (.+)", rules)
    read = set().union(*(metric_names(e) for e in exprs)) - recorded
    assert read - exported == set()


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "and", "or", "unless", "le", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges, strings,
    function calls and keywords left out)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\([^()]*\bby\b|\bby\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue
        names.add(m.group(0))
    return names


def test_metric_names_reads_promql_as_expected():
    assert metric_names('sum by (le) (rate(trade_latency_ms_bucket{le="1"}[10m]))') == {
        "trade_latency_ms_bucket"}
    assert metric_names("max(candle_lag_seconds) > 600") == {"candle_lag_seconds"}
    assert metric_names("60 * methtrader:orders:rate5m") == {"methtrader:orders:rate5m"}
