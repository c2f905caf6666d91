"""The `metrics_exporter` node in its own process, scraped by Debian's real `prometheus`.

The rack: the real `pdu_actuator` driving two simulated Modbus PDUs, fed by the test's sensor
and predictor stand-ins over DDS (helpers.rack). The exporter serves what the actuator
publishes; a `prometheus` server with its own config, storage folder and port scrapes it on
loopback every second, and its HTTP API must return the very allocation the actuator
published for one component. Without the prometheus binary that test skips; the exporter's
own endpoint is still checked. Bad parameters end the exporter with exit code 2, named.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import yaml
from helpers.grafana import dashboard_queries
from helpers.rack import MEASURED, NAMES, NS, Rack, actuator_params, free_port, pdu_server
from prometheus_client.parser import text_string_to_metric_families

from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RACK = NS.strip("/")
COMPONENT = NAMES[0]                   # a1: 150 W measured, p99 forecast 1.1 x that


def _get(url: str, timeout_s: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return reply.read()


def _scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = _get(url).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _wait(predicate, timeout_s: float, what: str, step_s: float = 0.2):
    """predicate()'s first truthy result within `timeout_s`, else a failure naming `what`."""
    end = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < end:
        try:
            result = predicate()
        except OSError as exc:         # not listening yet, or a reset while starting
            result, last_error = None, exc
        if result:
            return result
        time.sleep(step_s)
    pytest.fail(f"{what} not within {timeout_s:g} s (last error: {last_error})")


@pytest.fixture(scope="module")
def rack_graph(ros_env, tmp_path_factory):
    """The actuator on two simulated PDUs, the test's Rack, and the exporter on a free port;
    yields (rack, metrics URL). The exporter must end cleanly (exit 0) on SIGINT. The Rack
    leaves the DDS graph before the processes are stopped (helpers.graph.watching says why)."""
    import rclpy

    tmp = tmp_path_factory.mktemp("metrics")
    ports = [free_port(), free_port()]
    params = tmp / "actuator.yaml"
    params.write_text(yaml.safe_dump(
        {"/**/pdu_actuator": {"ros__parameters": actuator_params(ports)}}))
    servers = [pdu_server(p) for p in ports]
    for s in servers:
        s.start()
    port = free_port()
    procs = {}
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("actuator", "exporter")}
    rclpy.init()
    rack = None
    try:
        procs["actuator"] = subprocess.Popen(
            [str(executable("pdu_actuator")), "--ros-args", "-r", f"__ns:={NS}",
             "--params-file", str(params)], env=ros_env, stdout=logs["actuator"],
            stderr=subprocess.STDOUT)
        procs["exporter"] = subprocess.Popen(
            [str(executable("metrics_exporter")), "--ros-args", "-r", f"__ns:={NS}",
             "-p", f"http.port:={port}"], env=ros_env, stdout=logs["exporter"],
            stderr=subprocess.STDOUT)
        rack = Rack()
        yield rack, f"http://127.0.0.1:{port}/metrics"
        rack.close()
        rack = None
        rclpy.shutdown()
        code = stop_process(procs.pop("exporter"), timeout_s=10.0)
        assert code == 0, (tmp / "exporter.log").read_text()
    finally:
        if rack is not None:
            rack.close()
        rclpy.try_shutdown()
        for proc in procs.values():
            stop_process(proc, timeout_s=10.0)
        for s in servers:
            s.stop()
        for f in logs.values():
            f.close()


def _label(**labels) -> frozenset:
    return frozenset({"rack": RACK, **labels}.items())


def test_the_endpoint_serves_the_racks_allocation_links_and_inputs(rack_graph):
    rack, url = rack_graph
    assert rack.run_until(lambda m: m.mode == "proactive" and m.pdu_written, 60.0), \
        "the actuator never came up"

    def served():
        # each input reaches the exporter on its own subscription: on a loaded machine the
        # forecast may arrive after the allocation
        s = _scrape(url)
        keys = (("rackpower_component_allocated_watts", _label(component=COMPONENT)),
                ("rackpower_component_forecast_watts", _label(component=COMPONENT,
                                                              quantile="p99")),
                ("rackpower_link_up", _label(node="pdu_actuator", device="pdu-a", kind="pdu")))
        return s if all(k in s for k in keys) else None

    s = _wait(served, 60.0, "allocation, forecast and PDU links on /metrics")
    published = {float(np.float32(m.allocated_w[0])) for m in rack.allocations}
    assert s[("rackpower_component_allocated_watts", _label(component=COMPONENT))] in published
    assert s[("rackpower_component_measured_watts", _label(component=COMPONENT))] == \
        MEASURED[0]
    assert s[("rackpower_rack_budget_watts", _label())] == pytest.approx(920.0)
    assert s[("rackpower_mode", _label(mode="proactive"))] == 1.0
    assert s[("rackpower_link_up", _label(node="pdu_actuator", device="pdu-b",
                                          kind="pdu"))] == 1.0
    # the stand-in's p99 is 1.1 x the measured power over the whole horizon
    assert s[("rackpower_component_forecast_watts", _label(
        component=COMPONENT, quantile="p99"))] == pytest.approx(MEASURED[0] * 1.1, rel=1e-6)
    used = {float(np.float32(m.forecast_w[0])) for m in rack.allocations}
    assert s[("rackpower_component_allocation_forecast_watts", _label(
        component=COMPONENT))] in used
    assert s[("rackpower_input_age_seconds", _label(topic="power_allocation"))] < 30.0
    assert s[("rackpower_allocation_age_seconds_count", _label())] >= 1


def test_only_this_racks_diagnostics_count_and_the_exporter_reports_itself(rack_graph):
    """A status of another rack (`/rack_pa_2/...`, a namespace this one's is a prefix of)
    is ignored; one of this rack, in the same array, is served. The exporter's own status
    says where it serves and which input it has not heard from (no health monitor here)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    rack, url = rack_graph
    own: list = []
    rack.node.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda msg: own.extend(st for st in msg.status
                               if st.name == f"{NS}/metrics_exporter: endpoint"), 10)
    pub = rack.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    foreign = DiagnosticStatus(level=DiagnosticStatus.ERROR, hardware_id="pdu-z",
                               name=f"{NS}_2/pdu_actuator: PDU pdu-z", values=[
                                   KeyValue(key="kind", value="pdu"),
                                   KeyValue(key="connected", value="False")])
    marker = DiagnosticStatus(level=DiagnosticStatus.WARN, name=f"{NS}/recorder: marker",
                              hardware_id="marker")
    marker_key = ("rackpower_diagnostic_level", _label(node="recorder", status="marker"))

    def marker_served():
        pub.publish(DiagnosticArray(status=[foreign, marker]))
        s = _scrape(url)
        return s if marker_key in s else None

    s = _wait(marker_served, 30.0, "this rack's marker status on /metrics")
    assert s[marker_key] == 1.0
    devices = {dict(labels).get("device") for name, labels in s if name == "rackpower_link_up"}
    assert "pdu-z" not in devices and {"pdu-a", "pdu-b"} <= devices
    assert not any(dict(labels).get("node") == "metrics_exporter" for _, labels in s)
    _wait(lambda: own, 30.0, "the exporter's own /diagnostics")
    assert own[-1].level == DiagnosticStatus.WARN
    assert own[-1].message == f"serving {url}; nothing yet on component_health"
    values = {kv.key: kv.value for kv in own[-1].values}
    assert values["url"] == url and values["rack"] == RACK


@pytest.fixture(scope="module")
def prometheus(rack_graph, tmp_path_factory):
    """Debian's prometheus server scraping the exporter every second, with its own config,
    storage folder and web port on loopback; yields its base URL."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip(f"{PROMETHEUS} is absent: `make setup` installs Debian's prometheus "
                    "(apt-get install prometheus)")
    _, url = rack_graph
    target = urllib.parse.urlsplit(url).netloc
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "rackpower",
                            "static_configs": [{"targets": [target]}]}]}))
    web = free_port()
    with open(tmp / "prometheus.log", "w") as log:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{web}"
        _wait(lambda: proc.poll() is None and _get(f"{base}/-/ready").startswith(b"Prometheus"),
              60.0, "prometheus ready")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _query(base: str, promql: str) -> list:
    reply = json.loads(_get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"))
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def test_prometheus_scrapes_the_allocation_the_actuator_published(rack_graph, prometheus):
    rack, _ = rack_graph
    assert rack.run_until(lambda m: m.mode == "proactive" and m.pdu_written, 60.0)
    promql = (f'rackpower_component_allocated_watts{{rack="{RACK}",'
              f'component="{COMPONENT}"}}')
    result = _wait(lambda: _query(prometheus, promql), 60.0, f"{promql} in prometheus")
    assert len(result) == 1
    assert result[0]["metric"]["job"] == "rackpower"
    value = float(result[0]["value"][1])
    published = {float(np.float32(m.allocated_w[0])) for m in rack.allocations}
    assert value in published, (value, sorted(published)[-5:])
    assert value >= MEASURED[0]          # the allocation covers what a1 draws
    up = _query(prometheus, 'up{job="rackpower"}')
    assert [float(r["value"][1]) for r in up] == [1.0]
    measured = _query(prometheus, f'rackpower_component_measured_watts{{component="'
                                  f'{COMPONENT}"}}')
    assert float(measured[0]["value"][1]) == MEASURED[0]


# panels the test rack fills: it runs no health_monitor, current_sensor or host_telemetry,
# and nothing is above OK in its diagnostics
EMPTY_HERE = ("Component health", "Health: suspected causes", "Diagnostics not OK")


def test_every_dashboard_query_runs_on_prometheus_and_the_racks_panels_have_data(
        rack_graph, prometheus):
    """The shipped Grafana dashboard's queries, its variables set to this rack and a1."""
    queries = dashboard_queries(RACK, COMPONENT, rate_interval="30s")
    expected = [(title, q) for title, q in queries if title not in EMPTY_HERE]
    _wait(lambda: all(_query(prometheus, q) for _, q in expected), 60.0,
          "data for every panel of the rack")
    for title, q in queries:
        _query(prometheus, q)           # valid PromQL that prometheus evaluates
    links = _query(prometheus, next(q for t, q in queries if t == "Device links"))
    assert {r["metric"]["device"]: float(r["value"][1]) for r in links} == \
        {"pdu-a": 1.0, "pdu-b": 1.0}


# -- parameter errors -----------------------------------------------------------------------

def _run_exporter(env: dict, *ros_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(executable("metrics_exporter")), "--ros-args", *ros_args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_bad_address_ends_the_exporter_with_exit_2_naming_it(ros_env):
    out = _run_exporter(ros_env, "-p", "http.address:=mgmt-net", "-p", "http.prot:=1")
    assert out.returncode == 2, out.stderr
    assert "http.address = 'mgmt-net': expected an IP address" in out.stderr
    assert "http.prot: not a parameter of metrics_exporter; did you mean 'http.port'?" \
        in out.stderr
    assert "Traceback" not in out.stderr


def test_a_port_in_use_ends_the_exporter_with_exit_2_naming_it(ros_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _run_exporter(ros_env, "-p", f"http.port:={port}")
    assert out.returncode == 2, out.stderr
    assert f"http.port = {port}, http.address = '127.0.0.1': cannot listen there" in out.stderr
    assert "Traceback" not in out.stderr
