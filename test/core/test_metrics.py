"""core/metrics.py: the rack's records as Prometheus metrics, read back through
prometheus_client's own parser of the text format /metrics serves; and the metrics_exporter's
configuration."""
from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rackpower_nodes.core.allocation import ForecastView
from rackpower_nodes.core.metrics import (
    AllocationRecord, ForecastRecord, HealthRecord, RackMetrics, StatusRecord)
from rackpower_nodes.core.metrics_exporter_config import (
    DEFAULT_PORT, metrics_exporter_config_from_params)
from rackpower_nodes.core.params import ConfigError

T0 = 1_800_000_000.0          # Unix s


class Clocks:
    """A settable Unix clock and monotonic clock, s."""

    def __init__(self):
        self.unix, self.mono = T0, 100.0

    def advance(self, dt: float) -> None:
        self.unix += dt
        self.mono += dt


def scrape(metrics: RackMetrics) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of the served text, parsed as Prometheus would."""
    text = metrics.exposition().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset({"rack": "r1", **labels}.items()))]


def names(samples) -> set[str]:
    return {name for name, _ in samples}


def allocation(stamp: float = T0, mode: str = "proactive", reason: str = "",
               window_s: float = 1.0) -> AllocationRecord:
    return AllocationRecord(
        stamp_unix=stamp, mode=mode, mode_reason=reason, budget_w=3680.0, breaker_w=4600.0,
        window_s=window_s, channel_ids=("srv01", "srv02"),
        allocated_w=np.array([412.5, 200.0]), measured_w=np.array([380.25, np.nan]),
        floor_w=np.array([120.0, 80.0]), ceiling_w=np.array([800.0, 600.0]),
        held_w=np.array([410.0, np.nan]), total_allocated_w=612.5, total_measured_w=380.25,
        slack_w=3067.5, forecast_model="lstm v3", pdu_written=True,
        forecast_w=np.array([np.nan, 190.5]))


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def metrics(clocks) -> RackMetrics:
    return RackMetrics("r1", lead_s=1.0, window_s=1.0, clock=lambda: clocks.unix,
                       monotonic=lambda: clocks.mono)


def test_before_any_message_only_the_inputs_show_and_every_one_is_infinitely_old(metrics):
    s = scrape(metrics)
    for topic in ("power_allocation", "power_forecast", "component_health", "diagnostics"):
        assert value(s, "rackpower_input_age_seconds", topic=topic) == math.inf
        assert value(s, "rackpower_input_messages_total", topic=topic) == 0
    assert not any(n.startswith("rackpower_component_") for n in names(s))
    assert "rackpower_rack_budget_watts" not in names(s)


def test_an_allocation_gives_each_components_powers_and_the_racks_totals(metrics):
    metrics.on_allocation(allocation())
    s = scrape(metrics)
    assert value(s, "rackpower_component_allocated_watts", component="srv01") == 412.5
    assert value(s, "rackpower_component_measured_watts", component="srv01") == 380.25
    assert value(s, "rackpower_component_held_watts", component="srv01") == 410.0
    assert value(s, "rackpower_component_floor_watts", component="srv02") == 80.0
    assert value(s, "rackpower_component_ceiling_watts", component="srv02") == 600.0
    assert value(s, "rackpower_component_allocation_forecast_watts", component="srv02") == 190.5
    # NaN (not measured yet, nothing enforces it) is left out, not served as NaN
    absent = [("rackpower_component_measured_watts", "srv02"),
              ("rackpower_component_held_watts", "srv02"),
              ("rackpower_component_allocation_forecast_watts", "srv01")]
    for name, component in absent:
        assert (name, frozenset({"rack": "r1", "component": component}.items())) not in s
    assert value(s, "rackpower_rack_budget_watts") == 3680.0
    assert value(s, "rackpower_rack_breaker_watts") == 4600.0
    assert value(s, "rackpower_rack_allocated_watts") == 612.5
    assert value(s, "rackpower_rack_measured_watts") == 380.25
    assert value(s, "rackpower_rack_slack_watts") == 3067.5
    assert value(s, "rackpower_allocation_pdu_written") == 1.0
    assert value(s, "rackpower_input_messages_total", topic="power_allocation") == 1


def test_the_mode_is_one_hot_and_the_safe_reason_is_in_the_info_metric(metrics):
    metrics.on_allocation(allocation(mode="safe", reason="forecast stale for 3.0 s"))
    s = scrape(metrics)
    assert {m: value(s, "rackpower_mode", mode=m)
            for m in ("proactive", "reactive", "static", "safe")} == \
        {"proactive": 0, "reactive": 0, "static": 0, "safe": 1}
    assert value(s, "rackpower_allocation_info", mode="safe",
                 mode_reason="forecast stale for 3.0 s", forecast_model="lstm v3") == 1


def _forecast(origin: float, step_s: float = 0.5) -> ForecastRecord:
    """srv01's quantiles rise by 10 W a step from 100/150/200 W; srv02 is unknown (NaN)."""
    steps = np.arange(10.0) * 10.0
    p50 = np.vstack([100.0 + steps, np.full(10, np.nan)])
    view = ForecastView(origin, step_s, p50, p50 + 50.0, p50 + 100.0)
    return ForecastRecord(view, ("srv01", "srv02"), "lstm", "v3", False, "", 4.0)


def test_forecast_quantiles_are_their_peak_over_the_actuation_window(metrics):
    metrics.on_forecast(_forecast(T0))
    s = scrape(metrics)
    # window [origin + 1 s, origin + 2 s] with 0.5 s steps: steps 3 and 4, peak at step 4
    assert value(s, "rackpower_component_forecast_watts", component="srv01",
                 quantile="p50") == 130.0
    assert value(s, "rackpower_component_forecast_watts", component="srv01",
                 quantile="p90") == 180.0
    assert value(s, "rackpower_component_forecast_watts", component="srv01",
                 quantile="p99") == 230.0
    assert not any(dict(labels).get("component") == "srv02" for name, labels in s
                   if name == "rackpower_component_forecast_watts")
    # the allocation's own window replaces the configured one: [1 s, 3 s] ends at step 6
    metrics.on_allocation(allocation(window_s=2.0))
    s = scrape(metrics)
    assert value(s, "rackpower_component_forecast_watts", component="srv01",
                 quantile="p90") == 200.0
    assert value(s, "rackpower_forecast_fallback") == 0.0
    assert value(s, "rackpower_forecast_info", model="lstm", version="v3",
                 fallback_reason="") == 1


def test_message_ages_at_receipt_fill_the_latency_histograms(metrics, clocks):
    clocks.advance(0.2)
    metrics.on_allocation(allocation(stamp=clocks.unix - 0.03))
    metrics.on_allocation(allocation(stamp=clocks.unix - 0.3))
    metrics.on_forecast(_forecast(clocks.unix - 0.07))
    s = scrape(metrics)
    assert value(s, "rackpower_allocation_age_seconds_bucket", le="0.025") == 0
    assert value(s, "rackpower_allocation_age_seconds_bucket", le="0.05") == 1
    assert value(s, "rackpower_allocation_age_seconds_bucket", le="0.5") == 2
    assert value(s, "rackpower_allocation_age_seconds_count") == 2
    assert value(s, "rackpower_allocation_age_seconds_sum") == pytest.approx(0.33)
    assert value(s, "rackpower_forecast_age_seconds_bucket", le="0.1") == 1
    assert value(s, "rackpower_forecast_age_seconds_bucket", le="0.05") == 0
    assert value(s, "rackpower_forecast_inference_seconds_sum") == pytest.approx(0.004)


def test_a_silent_topic_ages_while_the_others_stay_fresh(metrics, clocks):
    metrics.on_allocation(allocation())
    metrics.on_forecast(_forecast(T0))
    clocks.advance(7.5)
    metrics.on_allocation(allocation(stamp=clocks.unix))
    s = scrape(metrics)
    assert value(s, "rackpower_input_age_seconds", topic="power_allocation") == 0.0
    assert value(s, "rackpower_input_age_seconds", topic="power_forecast") == 7.5
    assert value(s, "rackpower_input_age_seconds", topic="component_health") == math.inf
    assert metrics.input_ages()["power_forecast"] == 7.5


@pytest.mark.parametrize("state, code", [("ok", 0), ("watch", 1), ("fault", 2),
                                         ("bogus", -1)])
def test_health_state_score_cause_and_age(metrics, clocks, state, code):
    metrics.on_health(HealthRecord(T0 - 2.0, "srv02", state, 0.75, "fan_wear", True))
    s = scrape(metrics)
    assert value(s, "rackpower_component_health_state", component="srv02") == code
    assert value(s, "rackpower_component_health_score", component="srv02") == 0.75
    assert value(s, "rackpower_component_sensor_fault", component="srv02") == 1.0
    assert value(s, "rackpower_component_health_age_seconds", component="srv02") == 2.0
    assert value(s, "rackpower_component_health_info", component="srv02", state=state,
                 cause="fan_wear") == 1


def _statuses() -> list[StatusRecord]:
    act = "/r1/pdu_actuator"
    return [
        StatusRecord(0, f"{act}: allocation", "pdu_actuator", "proactive",
                     {"mode": "proactive", "write_latency_ms_p50": "3.50",
                      "write_latency_ms_p99": "-"}),
        StatusRecord(0, f"{act}: PDU pdu_a", "pdu_a", "connected",
                     {"name": "pdu_a", "kind": "pdu", "connected": "True"}),
        StatusRecord(2, f"{act}: bmc_srv01", "bmc_srv01", "not answering: timed out",
                     {"name": "bmc_srv01", "kind": "bmc", "connected": "False"}),
        StatusRecord(2, "/r1/current_sensor: sensor board", "/dev/ttyACM0",
                     "port open but no frames", {"port_state": "open"}),
        StatusRecord(1, "/r1/host_telemetry: srv01", "srv01", "last scrape failed: 503",
                     {"up": "False", "stale": "False"}),
        StatusRecord(0, "/r1/host_telemetry: srv02", "srv02", "reachable",
                     {"up": "True", "stale": "False"}),
        StatusRecord(3, "/r1/health_monitor: srv01", "srv01", "no samples", {"state": "stale"}),
    ]


def test_diagnostics_give_each_devices_link_and_each_statuses_level(metrics, clocks):
    metrics.on_diagnostics(_statuses()[:3])
    clocks.advance(4.0)
    metrics.on_diagnostics(_statuses()[3:])
    s = scrape(metrics)
    links = {(dict(labels)["device"], dict(labels)["kind"]): v for (name, labels), v in s.items()
             if name == "rackpower_link_up"}
    assert links == {("pdu_a", "pdu"): 1.0, ("bmc_srv01", "bmc"): 0.0,
                     ("/dev/ttyACM0", "sensor_board"): 0.0, ("srv01", "host"): 0.0,
                     ("srv02", "host"): 1.0}
    assert value(s, "rackpower_diagnostic_level", node="health_monitor", status="srv01") == 3
    assert value(s, "rackpower_diagnostic_level", node="pdu_actuator", status="PDU pdu_a") == 0
    # the p50 write latency is a number, the p99 '-' is not served
    assert value(s, "rackpower_actuation_latency_seconds", quantile="0.5") == 0.0035
    assert ("rackpower_actuation_latency_seconds",
            frozenset({"rack": "r1", "quantile": "0.99"}.items())) not in s
    assert value(s, "rackpower_node_diagnostics_age_seconds", node="pdu_actuator") == 4.0
    assert value(s, "rackpower_node_diagnostics_age_seconds", node="host_telemetry") == 0.0


# -- configuration ------------------------------------------------------------------------

def test_config_defaults_listen_on_loopback():
    cfg = metrics_exporter_config_from_params({})
    assert (cfg.address, cfg.port, cfg.rack) == ("127.0.0.1", DEFAULT_PORT, "")
    assert (cfg.lead_s, cfg.window_s) == (1.0, 1.0)


@pytest.mark.parametrize("params, message", [
    ({"http.address": "mgmt-net"}, "http.address = 'mgmt-net': expected an IP address"),
    ({"http.port": 70000}, "http.port = 70000: expected 0..65535"),
    ({"http.port": "9470"}, "http.port = '9470': expected an integer"),
    ({"rack": "rack 07"}, "rack = 'rack 07': expected letters"),
    ({"forecast.window_s": 0.0}, "forecast.window_s = 0.0"),
    ({"http.prot": 9000}, "http.prot: not a parameter of metrics_exporter; did you mean "
                          "'http.port'?"),
])
def test_config_errors_name_the_key_and_the_value(params, message):
    with pytest.raises(ConfigError) as err:
        metrics_exporter_config_from_params(params)
    assert message in str(err.value)
