"""Host telemetry from Prometheus node_exporter endpoints: the pure part of `host_telemetry`.

`TelemetryCollector.poll()` scrapes every configured host concurrently (`fetch` over HTTP,
`parse_node_exporter`, a parser of the few series used), turns the counters into rates with one
`RateTracker` per host and reports a `HostStatus` per host. A failing host never raises: its
status says why (`last_error` names the host and the reason) and goes stale after a while.

The parts: `exporter` (fetching and parsing node_exporter text, bounded inputs), `rates` (rates
and derived metrics of one host, counter resets) and `poller` (the concurrent poll, per-host
status, this machine through psutil). This package re-exports their public names.
"""
from rackpower_nodes.core.telemetry.exporter import (
    MAX_BODY_BYTES, MAX_SAMPLES, USED_SERIES, Connection, HostTarget, RawSample, Scrape,
    ScrapeError, fetch, parse_node_exporter, scrape)
from rackpower_nodes.core.telemetry.exporter import _used_lines  # noqa: F401 (tests use it)
from rackpower_nodes.core.telemetry.poller import (
    HostStatus, LocalHostReader, TelemetryCollector, local_host_rates, local_raw_sample)
from rackpower_nodes.core.telemetry.rates import HostRates, RateTracker, calendar_features

__all__ = [
    "MAX_BODY_BYTES", "MAX_SAMPLES", "USED_SERIES", "Connection", "HostRates", "HostStatus",
    "HostTarget", "LocalHostReader", "RateTracker", "RawSample", "Scrape", "ScrapeError",
    "TelemetryCollector", "calendar_features", "fetch", "local_host_rates", "local_raw_sample",
    "parse_node_exporter", "scrape",
]
