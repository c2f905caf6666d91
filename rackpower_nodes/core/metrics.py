"""The rack's state as Prometheus metrics: what the `metrics_exporter` node serves at /metrics.

Pure Python and numpy with prometheus_client, no rclpy. The node turns each message into one of
the plain records below and hands it to :class:`RackMetrics`; a scrape asks the registry,
which calls :meth:`RackMetrics.collect` for the newest values (a custom collector: nothing is
kept per series between scrapes, so a component or device that leaves the rack leaves the
metrics with it) and the latency histograms.

Every metric carries the label `rack`; per-component ones `component` too. Units are in the
names (`_watts`, `_seconds`). Inputs not heard from yet are absent, except the age of each
input topic, which is +Inf until its first message, so a dead source shows (docs/metrics.md
lists every metric).
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from rackpower_nodes.core.allocation import MODES, QUANTILES, ForecastView, forecast_peak

TOPICS = ("power_allocation", "power_forecast", "component_health", "diagnostics")
HEALTH_STATES = {"ok": 0, "watch": 1, "fault": 2}
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class AllocationRecord:
    """One `PowerAllocation`: `stamp_unix` when it was computed (s); per-component arrays (W)
    in the order of `channel_ids`, NaN where unknown (measured, held, forecast)."""

    stamp_unix: float
    mode: str
    mode_reason: str
    budget_w: float
    breaker_w: float
    window_s: float
    channel_ids: tuple[str, ...]
    allocated_w: np.ndarray
    measured_w: np.ndarray
    floor_w: np.ndarray
    ceiling_w: np.ndarray
    held_w: np.ndarray
    total_allocated_w: float
    total_measured_w: float
    slack_w: float
    forecast_model: str = ""
    pdu_written: bool = False
    forecast_w: np.ndarray | None = None      # the window peak the allocation used (W, NaN)


@dataclass(frozen=True)
class ForecastRecord:
    """One `PowerForecast`: `view` holds the quantiles (origin `view.t_unix`, s) in the order
    of `channel_ids`; `fallback` says whether the persistence fallback made any of it."""

    view: ForecastView
    channel_ids: tuple[str, ...]
    model_name: str = ""
    model_version: str = ""
    fallback: bool = False
    fallback_reason: str = ""
    inference_ms: float = math.nan


@dataclass(frozen=True)
class HealthRecord:
    """One `ComponentHealth`: `stamp_unix`, the end of the newest second judged (s)."""

    stamp_unix: float
    component_id: str
    state: str
    score: float
    cause: str = ""
    sensor_fault: bool = False


@dataclass(frozen=True)
class StatusRecord:
    """One `/diagnostics` status: `level` 0 OK, 1 WARN, 2 ERROR, 3 STALE; `name` as the nodes
    write it, '<node's full name>: <what>'; `values` its key/value pairs as text."""

    level: int
    name: str
    hardware_id: str
    message: str = ""
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def node(self) -> str:
        """The publishing node's name without its namespace (pdu_actuator, ...)."""
        return self.name.split(":", 1)[0].rsplit("/", 1)[-1]

    @property
    def what(self) -> str:
        return self.name.split(": ", 1)[1] if ": " in self.name else self.name

    def link(self) -> tuple[str, bool] | None:
        """(kind, up) when this status is a device link: a PDU or BMC (`connected`), the
        sensor board (`port_state`) or a host's telemetry endpoint (`up`, `stale`); None
        otherwise. A link is up when the device answers and its data is not stale."""
        v = self.values
        if "connected" in v:
            return v.get("kind", "pdu"), v["connected"] == "True"
        if "port_state" in v:
            return "sensor_board", v["port_state"] == "open" and self.level < 2
        if "up" in v and "stale" in v:
            return "host", v["up"] == "True" and v["stale"] == "False"
        return None


@dataclass(frozen=True)
class _Window:
    """The actuation window the forecast peaks cover (what forecast_peak reads of a policy)."""

    lead_s: float
    window_s: float


class RackMetrics(Collector):
    """The newest state of one rack, collected into metric families on each scrape.

    `rack`: the `rack` label; `lead_s`, `window_s`: the actuation window (s) whose forecast
    peak the quantile metrics show (the allocation's own `window_s` replaces `window_s` once
    one arrives). `clock` (Unix s) and `monotonic` (s) are for tests. The `on_*` methods may be
    called from any thread; the registry's HTTP thread reads under the same lock.
    """

    def __init__(self, rack: str, lead_s: float = 1.0, window_s: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.rack, self.lead_s, self.window_s = rack, lead_s, window_s
        self._clock, self._monotonic = clock, monotonic
        self._lock = threading.Lock()
        self._allocation: AllocationRecord | None = None
        self._forecast: ForecastRecord | None = None
        self._health: dict[str, HealthRecord] = {}
        self._statuses: dict[str, tuple[StatusRecord, float]] = {}    # name: (status, mono)
        self._last_rx: dict[str, float] = {}
        self._count = dict.fromkeys(TOPICS, 0)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._allocation_age = self._histogram(
            "rackpower_allocation_age_seconds",
            "Age of each power_allocation at receipt: now - header.stamp (computed), s",
            LATENCY_BUCKETS_S)
        self._forecast_age = self._histogram(
            "rackpower_forecast_age_seconds",
            "Age of each power_forecast at receipt: now - its origin (the newest input step), "
            "so the time from the newest sample to the forecast in hand, s", LATENCY_BUCKETS_S)
        self._inference = self._histogram(
            "rackpower_forecast_inference_seconds",
            "Time the predictor took for each forecast (its inference_ms), s",
            INFERENCE_BUCKETS_S)

    def _histogram(self, name: str, doc: str, buckets: tuple[float, ...]):
        return Histogram(name, doc, ["rack"], buckets=buckets,
                         registry=self.registry).labels(self.rack)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, as /metrics serves it."""
        return generate_latest(self.registry)

    # -- inputs ---------------------------------------------------------------------------
    def _received(self, topic: str) -> None:
        self._last_rx[topic] = self._monotonic()
        self._count[topic] += 1

    def on_allocation(self, record: AllocationRecord) -> None:
        with self._lock:
            self._allocation = record
            self._received("power_allocation")
        self._allocation_age.observe(self._clock() - record.stamp_unix)

    def on_forecast(self, record: ForecastRecord) -> None:
        with self._lock:
            self._forecast = record
            self._received("power_forecast")
        self._forecast_age.observe(self._clock() - record.view.t_unix)
        if math.isfinite(record.inference_ms):
            self._inference.observe(record.inference_ms * 1e-3)

    def on_health(self, record: HealthRecord) -> None:
        with self._lock:
            self._health[record.component_id] = record
            self._received("component_health")

    def on_diagnostics(self, statuses: Iterable[StatusRecord]) -> None:
        """A `/diagnostics` array, already limited to this rack's nodes."""
        with self._lock:
            now = self._monotonic()
            for status in statuses:
                self._statuses[status.name] = (status, now)
            self._received("diagnostics")

    def input_ages(self) -> dict[str, float]:
        """Seconds since the newest message of each input topic (inf: none yet)."""
        with self._lock:
            last = dict(self._last_rx)
        now = self._monotonic()
        return {t: now - last[t] if t in last else math.inf for t in TOPICS}

    # -- collection -----------------------------------------------------------------------
    def collect(self) -> Iterator:
        with self._lock:
            alloc, fc = self._allocation, self._forecast
            health, statuses = list(self._health.values()), list(self._statuses.values())
            count = dict(self._count)
        ages, now_mono, now_unix = self.input_ages(), self._monotonic(), self._clock()
        yield from self._inputs(ages, count)
        if alloc is not None:
            yield from self._rack(alloc)
            yield from self._components(alloc)
        if fc is not None:
            yield from self._forecasts(fc, alloc.window_s if alloc else self.window_s)
        if health:
            yield from self._health_families(health, now_unix)
        if statuses:
            yield from self._diagnostics(statuses, now_mono)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["rack", *labels])

    def _inputs(self, ages: dict[str, float], count: dict[str, int]):
        age = self._gauge("rackpower_input_age_seconds",
                          "Seconds since the newest message of each input topic (+Inf: none "
                          "yet): a dead source shows here", ["topic"])
        total = CounterMetricFamily("rackpower_input_messages",
                                    "Messages received per input topic", labels=["rack", "topic"])
        for topic in TOPICS:
            age.add_metric([self.rack, topic], ages[topic])
            total.add_metric([self.rack, topic], count[topic])
        yield age
        yield total

    def _rack(self, a: AllocationRecord):
        for name, doc, value in (
                ("budget", "Rack budget: breaker rating x derating, W", a.budget_w),
                ("breaker", "Breaker rating, W", a.breaker_w),
                ("allocated", "Sum of the allocations, W", a.total_allocated_w),
                ("measured", "Sum of the known measured powers, W", a.total_measured_w),
                ("slack", "Budget not allocated: budget - allocated, W", a.slack_w)):
            g = self._gauge(f"rackpower_rack_{name}_watts", doc)
            g.add_metric([self.rack], value)
            yield g
        window = self._gauge("rackpower_allocation_window_seconds",
                             "The actuation window the allocation covers, s")
        window.add_metric([self.rack], a.window_s)
        written = self._gauge("rackpower_allocation_pdu_written",
                              "1 when the newest allocation reached every PDU that takes "
                              "allocations, else 0")
        written.add_metric([self.rack], float(a.pdu_written))
        mode = self._gauge("rackpower_mode", "Allocation mode, one-hot: 1 for the mode in "
                           "force (proactive, reactive, static, safe)", ["mode"])
        for m in dict.fromkeys((*MODES, a.mode)):
            mode.add_metric([self.rack, m], float(m == a.mode))
        info = InfoMetricFamily("rackpower_allocation", "The allocation's mode, why safe mode "
                                "is active ('' otherwise) and the forecast model it used",
                                labels=["rack"])
        info.add_metric([self.rack], {"mode": a.mode, "mode_reason": a.mode_reason,
                                      "forecast_model": a.forecast_model})
        yield from (window, written, mode, info)

    def _components(self, a: AllocationRecord):
        for key, doc in (("measured", "Newest measured mean power"),
                         ("allocated", "Allocation for the coming window"),
                         ("held", "What the PDU or BMC acknowledged holding"),
                         ("floor", "Floor: idle power"),
                         ("ceiling", "Ceiling: outlet or PSU rating")):
            g = self._gauge(f"rackpower_component_{key}_watts", f"{doc}, W", ["component"])
            for cid, value in zip(a.channel_ids, getattr(a, f"{key}_w")):
                if math.isfinite(value):
                    g.add_metric([self.rack, cid], float(value))
            yield g
        if a.forecast_w is not None:
            used = self._gauge("rackpower_component_allocation_forecast_watts",
                               "The forecast peak the allocation used (at the actuator's "
                               "policy.quantile), W", ["component"])
            for cid, value in zip(a.channel_ids, a.forecast_w):
                if math.isfinite(value):
                    used.add_metric([self.rack, cid], float(value))
            yield used

    def _forecasts(self, fc: ForecastRecord, window_s: float):
        window = _Window(self.lead_s, window_s)
        g = self._gauge("rackpower_component_forecast_watts",
                        "Forecast peak over the actuation window [origin + lead_s, origin + "
                        "lead_s + window_s] per quantile, W", ["component", "quantile"])
        for q in QUANTILES:
            peaks = forecast_peak(fc.view, fc.view.t_unix, window, q)
            for cid, value in zip(fc.channel_ids, peaks):
                if math.isfinite(value):
                    g.add_metric([self.rack, cid, q], float(value))
        yield g
        fallback = self._gauge("rackpower_forecast_fallback",
                               "1 when the persistence fallback made (part of) the newest "
                               "forecast, else 0")
        fallback.add_metric([self.rack], float(fc.fallback))
        info = InfoMetricFamily("rackpower_forecast", "The model behind the newest forecast "
                                "and why the fallback served ('' when it did not)",
                                labels=["rack"])
        info.add_metric([self.rack], {"model": fc.model_name, "version": fc.model_version,
                                      "fallback_reason": fc.fallback_reason})
        yield fallback
        yield info

    def _health_families(self, health: list[HealthRecord], now_unix: float):
        state = self._gauge("rackpower_component_health_state",
                            "Health verdict: 0 ok, 1 watch, 2 fault (-1 unknown)", ["component"])
        score = self._gauge("rackpower_component_health_score",
                            "Detector evidence / its fault threshold (>= 1: fault)",
                            ["component"])
        sensor = self._gauge("rackpower_component_sensor_fault",
                             "1 when the measurement, not the component, is at fault",
                             ["component"])
        age = self._gauge("rackpower_component_health_age_seconds",
                          "Seconds from the end of the newest second judged to now",
                          ["component"])
        info = InfoMetricFamily("rackpower_component_health", "Health state and suspected "
                                "cause ('' while ok)", labels=["rack", "component"])
        for h in sorted(health, key=lambda r: r.component_id):
            labels = [self.rack, h.component_id]
            state.add_metric(labels, float(HEALTH_STATES.get(h.state, -1)))
            if math.isfinite(h.score):
                score.add_metric(labels, float(h.score))
            sensor.add_metric(labels, float(h.sensor_fault))
            age.add_metric(labels, now_unix - h.stamp_unix)
            info.add_metric(labels, {"state": h.state, "cause": h.cause})
        yield from (state, score, sensor, age, info)

    def _diagnostics(self, statuses: list[tuple[StatusRecord, float]], now: float):
        level = self._gauge("rackpower_diagnostic_level", "Newest /diagnostics level of each "
                            "status: 0 OK, 1 WARN, 2 ERROR, 3 STALE", ["node", "status"])
        link = self._gauge("rackpower_link_up", "1 when the device answers and its data is "
                           "fresh (PDUs, BMCs, the sensor board, hosts' telemetry), else 0",
                           ["node", "device", "kind"])
        latency = self._gauge("rackpower_actuation_latency_seconds",
                              "pdu_actuator: from a sample batch's arrival to its allocation "
                              "written to every PDU, at these quantiles (its diagnostics), s",
                              ["quantile"])
        node_age = self._gauge("rackpower_node_diagnostics_age_seconds",
                               "Seconds since each node's newest /diagnostics", ["node"])
        newest: dict[str, float] = {}
        for s, rx in sorted(statuses, key=lambda item: item[0].name):
            level.add_metric([self.rack, s.node, s.what], float(s.level))
            newest[s.node] = max(newest.get(s.node, -math.inf), rx)
            found = s.link()
            if found is not None:
                link.add_metric([self.rack, s.node, s.hardware_id, found[0]], float(found[1]))
            for q, key in (("0.5", "write_latency_ms_p50"), ("0.99", "write_latency_ms_p99")):
                value = _number(s.values.get(key, ""))
                if math.isfinite(value):
                    latency.add_metric([self.rack, q], value * 1e-3)
        for node, rx in sorted(newest.items()):
            node_age.add_metric([self.rack, node], now - rx)
        yield from (level, link, latency, node_age)


def _number(text: str) -> float:
    """A diagnostics value as a number; NaN when it is not one (absent, '-', 'never')."""
    try:
        return float(text)
    except ValueError:
        return math.nan
