"""ops/grafana: the dashboard has the fields of Grafana's dashboard JSON model, a sane grid,
the five rows the operator looks for, and every panel queries a metric the appliance really
exports (or a recording rule of ops/prometheus/rules.yml). Grafana itself is not installable
here, so the documented model is checked, not a Grafana import."""

from __future__ import annotations

import json
import re

import pytest

from tests.ops.conftest import OPS, families
from tests.ops.test_prometheus import metric_names

pytestmark = pytest.mark.timeout(180)
TOP_LEVEL = {"uid", "title", "tags", "timezone", "editable", "graphTooltip", "panels", "time",
             "timepicker", "templating", "annotations", "refresh", "schemaVersion", "version",
             "links"}
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "heatmap", "state-timeline",
               "table", "status-history"}


def dashboard() -> dict:
    return json.loads((OPS / "grafana/methtrader.json").read_text())


def test_the_dashboard_has_the_json_models_fields_and_a_sane_grid():
    d = dashboard()
    assert TOP_LEVEL <= set(d), TOP_LEVEL - set(d)
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 39
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh") and 0 <= g["x"] and g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == ["Account", "Trading", "Models", "Data", "Health"]
    assert any(p["type"] == "heatmap" and "feature_drift" in p["targets"][0]["expr"]
               for p in d["panels"])
    assert [v["type"] for v in d["templating"]["list"]] == ["datasource"]


def test_every_panel_queries_a_metric_run_exports(scraped):
    recorded = set(re.findall(r"record: (\S+)", (OPS / "prometheus/rules.yml").read_text()))
    exported = families(scraped) | recorded
    missing = {(p["title"], name) for p in dashboard()["panels"] for t in p.get("targets", [])
               for name in metric_names(t["expr"]) if name not in exported}
    assert missing == set()


def test_the_provisioning_folder_loads_the_dashboard():
    provider = (OPS / "grafana/provisioning/dashboards/methtrader.yaml").read_text()
    assert "type: file" in provider and "apiVersion: 1" in provider
    linked = OPS / "grafana/provisioning/dashboards/methtrader.json"
    assert json.loads(linked.read_text())["uid"] == dashboard()["uid"]
