"""config/grafana/rackpower-dashboard.json: a Grafana dashboard (classic JSON model) over the
metrics_exporter's metrics. Checked here: its variables (data source, rack, component), that
every query names only metrics the exporter serves and selects the chosen rack, and, with
Debian's `promtool` (package prometheus), that every query is valid PromQL.
(test/nodes/test_metrics_prometheus.py runs the queries on a real prometheus server.)"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from helpers.grafana import dashboard, dashboard_queries, panels
from prometheus_client.parser import text_string_to_metric_families

from rackpower_nodes.core.allocation import ForecastView
from rackpower_nodes.core.metrics import (
    AllocationRecord, ForecastRecord, HealthRecord, RackMetrics, StatusRecord)

METRIC_RE = re.compile(r"\b(rackpower_[a-z0-9_]+|up)\b(?!\s*\()")


def _served_names() -> set[str]:
    """Every sample name the exporter serves once it has heard each kind of input."""
    m = RackMetrics("rack_01")
    one = np.array([1.0])
    m.on_allocation(AllocationRecord(0.0, "proactive", "", 1.0, 1.0, 1.0, ("a1",), one, one,
                                     one, one, one, 1.0, 1.0, 0.0, forecast_w=one))
    m.on_forecast(ForecastRecord(ForecastView(0.0, 0.1, [[1.0]], [[1.0]], [[1.0]]), ("a1",)))
    m.on_health(HealthRecord(0.0, "a1", "ok", 0.1))
    m.on_diagnostics([StatusRecord(0, "/rack_01/pdu_actuator: allocation", "x", "",
                                   {"write_latency_ms_p50": "1", "connected": "True"})])
    text = m.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples} | {"up"}


def test_variables_choose_a_prometheus_source_a_rack_and_components():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "label_values(rackpower_input_age_seconds, rack)" in \
        variables["rack"]["query"]["query"]
    assert variables["component"]["multi"] and variables["component"]["includeAll"]
    assert 'rack="$rack"' in variables["component"]["query"]["query"]


def test_every_panel_reads_the_chosen_source_and_rack_from_served_metrics():
    served = _served_names()
    shown = panels()
    assert len({p["id"] for p in dashboard()["panels"]}) == len(dashboard()["panels"])
    titles = " ".join(p["title"].lower() for p in shown)
    for part in ("budget", "forecast", "mode", "health", "links", "latency", "age"):
        assert part in titles
    for panel in shown:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            names = set(METRIC_RE.findall(target["expr"]))
            assert names and names <= served, (panel["title"], names - served)
            assert 'rack="$rack"' in target["expr"] or names == {"up"}, target["expr"]
    repeated = [p for p in shown if p.get("repeat")]
    assert [p["repeat"] for p in repeated] == ["component"]


def test_every_query_is_valid_promql(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is absent: `make setup` installs Debian's prometheus package")
    rules = [{"record": f"rackpower:dashboard_query_{i}", "expr": expr}
             for i, (_, expr) in enumerate(dashboard_queries("rack_01", "a1"))]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout
