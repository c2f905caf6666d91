"""Simulated node_exporter endpoints, scraped by the TelemetryCollector, with injected faults."""
from __future__ import annotations

import socket
import time

import pytest
from helpers.devices import LOOPBACK_TIMEOUT_S
from helpers.rack import free_port
from prometheus_client.parser import text_string_to_metric_families

from rackpower_nodes.core.telemetry import (
    HostTarget,
    RateTracker,
    ScrapeError,
    TelemetryCollector,
    parse_node_exporter,
    scrape,
)
from rackpower_nodes.sim.node_exporter import ExporterFleet, ExporterServer, SimulatedHost

GiB = 2**30
LOADS = {   # host -> advance() keyword arguments for 1 s
    "web1": {"cpu_util": 0.37, "mem_used_bytes": 40 * GiB, "net_rx_bps": 12.5e6,
             "net_tx_bps": 3.1e6, "disk_read_bps": 2.0e6, "disk_write_bps": 7.5e6},
    "db1": {"cpu_util": 0.91, "mem_used_bytes": 100 * GiB, "net_rx_bps": 1.0e5,
            "net_tx_bps": 8.0e7, "disk_read_bps": 3.0e8, "disk_write_bps": 1.2e8},
}


def make_hosts() -> dict[str, SimulatedHost]:
    return {"web1": SimulatedHost("web1", start_time_s=1.8e9),
            "db1": SimulatedHost("db1", n_cpus=4, net_devices=("eth0", "eth1"),
                                 disk_devices=("nvme0n1", "nvme1n1"), start_time_s=1.8e9)}


@pytest.fixture
def fleet():
    hosts = make_hosts()
    with ExporterFleet(hosts) as running:
        yield running


@pytest.fixture
def collector(fleet):
    # staleness, which would follow a slow fault's timeout, is tested on its own clock in
    # test_stale_after_silence_and_fresh_after_recovery
    with TelemetryCollector(fleet.targets(timeout_s=LOOPBACK_TIMEOUT_S),
                            stale_after_s=60.0) as c:
        yield c


def advance_all(hosts, dt_s=1.0):
    for name, host in hosts.items():
        host.advance(dt_s, **LOADS[name])


def by_host(statuses):
    return {s.host: s for s in statuses}


def assert_matches_load(rates, load, dt_s):
    assert rates.interval_s == pytest.approx(dt_s)
    assert rates.cpu_util == pytest.approx(load["cpu_util"], abs=0.01)
    assert rates.mem_used_bytes == pytest.approx(load["mem_used_bytes"], rel=1e-9)
    for key in ("net_rx_bps", "net_tx_bps", "disk_read_bps"):
        assert getattr(rates, key) == pytest.approx(load[key], rel=0.01)
    assert rates.disk_write_bps == pytest.approx(load["disk_write_bps"], rel=0.01)


def test_exposition_is_node_exporter_text():
    host = SimulatedHost("h", n_cpus=2, start_time_s=1.8e9)
    host.advance(2.0, **LOADS["web1"])
    text = host.exposition()
    assert "# HELP node_cpu_seconds_total" in text
    assert "# TYPE node_cpu_seconds_total counter" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("node_cpu_seconds", "node_memory_MemTotal_bytes", "node_memory_MemFree_bytes",
                 "node_memory_MemAvailable_bytes", "node_network_receive_bytes",
                 "node_network_transmit_bytes", "node_disk_read_bytes",
                 "node_disk_written_bytes", "node_boot_time_seconds", "node_time_seconds"):
        assert name in families, name
    rx = {s.labels["device"]: s.value for s in families["node_network_receive_bytes"].samples}
    assert rx["eth0"] == pytest.approx(25e6) and rx["lo"] > 0
    assert families["node_time_seconds"].samples[0].value == 1.8e9 + 2.0
    sample = parse_node_exporter(text)
    assert sample.n_cpus == 2 and sample.net_rx_bytes == pytest.approx(25e6)   # lo excluded
    idle = sample.cpu_seconds_by_mode["idle"] + sample.cpu_seconds_by_mode["iowait"]
    assert 1 - idle / sum(sample.cpu_seconds_by_mode.values()) == pytest.approx(0.37)


@pytest.mark.parametrize("kwargs", [{"dt_s": -1.0}, {"cpu_util": 1.2},
                                    {"mem_used_bytes": -1.0}, {"net_rx_bps": -5.0}])
def test_advance_rejects_bad_input(kwargs):
    args = {"dt_s": 1.0, **LOADS["web1"]} | kwargs
    with pytest.raises(ValueError):
        SimulatedHost("h").advance(**args)


@pytest.mark.parametrize("dt_s", [1.0, 0.1, 2.5])
def test_collector_reproduces_simulated_rates(fleet, collector, dt_s):
    first = by_host(collector.poll())
    assert all(s.up and s.rates is None and not s.stale for s in first.values())
    advance_all(fleet.hosts, dt_s)
    statuses = by_host(collector.poll())
    for name, load in LOADS.items():
        assert statuses[name].up and statuses[name].last_error == ""
        assert statuses[name].rates.mem_used_fraction == pytest.approx(
            load["mem_used_bytes"] / fleet.hosts[name].mem_total_bytes)
        assert_matches_load(statuses[name].rates, load, dt_s)


FAULTS = [("down", "connection refused"), ("slow", "timeout"), ("garbage", "garbage"),
          ("binary", "garbage"), ("http500", "500")]


@pytest.mark.parametrize(("fault", "expected"), FAULTS)
def test_fault_then_recovery(fleet, collector, fault, expected):
    collector.poll()
    advance_all(fleet.hosts)
    good = by_host(collector.poll())["web1"].rates
    fleet.servers["web1"].set_fault(fault, delay_s=30.0)
    advance_all(fleet.hosts)
    statuses = by_host(collector.poll())
    bad = statuses["web1"]
    assert not bad.up and bad.consecutive_failures == 1
    assert "web1" in bad.last_error and expected in bad.last_error
    assert bad.rates == good and not bad.stale          # last good rates, not stale yet
    assert statuses["db1"].up                            # other hosts unaffected
    fleet.servers["web1"].set_fault(None)
    advance_all(fleet.hosts)
    again = by_host(collector.poll())["web1"]
    assert again.up and again.last_error == "" and again.consecutive_failures == 0
    # the interval spans the failed scrape: still the true average rates
    assert_matches_load(again.rates, LOADS["web1"], 2.0)


def test_slow_hosts_are_waited_for_concurrently():
    hosts = {f"h{i}": SimulatedHost(f"h{i}", start_time_s=1.8e9) for i in range(6)}
    with ExporterFleet(hosts) as fleet:
        for server in fleet.servers.values():
            server.set_fault("slow", delay_s=60.0)
        with TelemetryCollector(fleet.targets(timeout_s=0.5), max_workers=8) as collector:
            start = time.monotonic()
            statuses = collector.poll()
            elapsed = time.monotonic() - start
    assert all(not s.up and "timeout" in s.last_error for s in statuses)
    assert elapsed < 30.0        # far below the servers' delay: the poll did not wait for them


def test_counter_reset_never_reports_negative_or_spike(fleet, collector):
    web = fleet.hosts["web1"]
    collector.poll()
    reported = []
    for reset_then_dt in (0.5, 5000.0):      # counters end below / far above the old values
        advance_all(fleet.hosts, 100.0)      # up for a while before it reboots
        collector.poll()
        web.reset_counters()
        web.advance(reset_then_dt, **LOADS["web1"])
        status = by_host(collector.poll())["web1"]
        assert status.up and status.rates.counter_reset
        reported.append(status.rates)
        advance_all(fleet.hosts)
        after = by_host(collector.poll())["web1"]
        assert not after.rates.counter_reset
        assert_matches_load(after.rates, LOADS["web1"], 1.0)
        reported.append(after.rates)
    assert by_host(collector.poll())["web1"].counter_resets == 2
    for rates in reported:
        for key in ("net_rx_bps", "net_tx_bps", "disk_read_bps", "disk_write_bps"):
            value = getattr(rates, key)
            assert value is None or 0 <= value <= 1.01 * LOADS["web1"][key]
        assert rates.cpu_util is None or 0.0 <= rates.cpu_util <= 1.0


def test_stale_after_silence_and_fresh_after_recovery(fleet):
    clock = [1000.0]
    targets = fleet.targets(timeout_s=LOOPBACK_TIMEOUT_S)
    with TelemetryCollector(targets, stale_after_s=2.0, clock=lambda: clock[0]) as collector:
        assert not collector.poll()[0].stale
        fleet.servers["web1"].set_fault("down")
        clock[0] += 1.0
        assert not by_host(collector.poll())["web1"].stale
        clock[0] += 1.5
        statuses = by_host(collector.poll())
        assert statuses["web1"].stale and not statuses["web1"].up
        assert statuses["web1"].last_success_s == 1000.0
        assert not statuses["db1"].stale
        fleet.servers["web1"].set_fault(None)
        clock[0] += 0.1
        assert not by_host(collector.poll())["web1"].stale


def test_never_reached_host_is_down_and_stale():
    server = ExporterServer(SimulatedHost("gone")).start()
    url = server.url
    server.stop()
    with TelemetryCollector([HostTarget("gone", url, LOOPBACK_TIMEOUT_S)]) as collector:
        status = collector.poll()[0]
    assert not status.up and status.stale and status.rates is None
    assert status.last_success_s is None and "connection refused" in status.last_error


def test_a_fleet_that_cannot_start_holds_no_port():
    """The second host's port is taken: start raises, and the first host's port is free
    again (not left serving by a half-started fleet)."""
    for _ in range(10):         # a free port whose next one we can hold
        base = free_port()
        taken = socket.socket()
        try:
            taken.bind(("127.0.0.1", base + 1))
            break
        except OSError:
            taken.close()
    else:
        pytest.skip("no free port followed by one this test could hold, in 10 tries")
    with taken:
        taken.listen()
        with pytest.raises(OSError):
            ExporterFleet(make_hosts(), base_port=base).start()
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", base))          # raises if the first server still holds it


def test_fleet_on_consecutive_ports():
    errors = []
    for _ in range(10):         # another process may hold or take base + 1: try elsewhere
        base = free_port()
        try:
            fleet = ExporterFleet(make_hosts(), base_port=base).start()
            break
        except OSError as exc:
            errors.append(f"{base}: {exc}")
    else:
        pytest.skip(f"no two consecutive free ports in 10 tries: {errors}")
    with fleet:
        assert [s.port for s in fleet.servers.values()] == [base, base + 1]
        assert fleet.urls["web1"] == f"http://127.0.0.1:{base}/metrics"


def test_down_keeps_the_port_and_other_paths_are_404():
    host = SimulatedHost("h", start_time_s=1.8e9)
    with ExporterServer(host) as server:
        port = server.port
        server.set_fault("down")
        server.set_fault(None)
        assert server.port == port
        tracker = RateTracker()
        assert tracker.update(scrape(HostTarget("h", server.url)).sample, 0.0) is None
        with pytest.raises(ScrapeError, match="404"):
            scrape(HostTarget("h", server.url.replace("/metrics", "/other")))


def test_scrapes_share_one_kept_alive_connection_and_down_closes_it():
    import http.client

    host = SimulatedHost("h", start_time_s=1.8e9)
    with ExporterServer(host) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2.0)
        try:
            for _ in range(3):                    # one TCP connection for every request
                conn.request("GET", "/metrics")
                answer = conn.getresponse()
                assert answer.status == 200 and answer.version == 11
                assert b"node_time_seconds" in answer.read()
                assert not answer.will_close
            first = conn.sock
            conn.request("GET", "/metrics")
            conn.getresponse().read()
            assert conn.sock is first
            server.set_fault("down")              # the open connection goes down too
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                conn.request("GET", "/metrics")
                conn.getresponse().read()
        finally:
            conn.close()
        with pytest.raises(ScrapeError):
            scrape(HostTarget("h", server.url, timeout_s=0.5))


def test_a_client_resetting_its_kept_alive_connection_leaves_no_traceback(capfd):
    """A scraper that times out closes its connection while the server waits for its next
    request: the simulator logs it at debug level, not as a traceback on stderr."""
    import http.client
    import struct

    host = SimulatedHost("h", start_time_s=1.8e9)
    with ExporterServer(host) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2.0)
        conn.request("GET", "/metrics")
        assert conn.getresponse().read()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()                                   # RST: the server's read is reset
        end = time.monotonic() + 30.0                  # until its handler thread has ended
        while server._server._open and time.monotonic() < end:
            time.sleep(0.01)
        assert not server._server._open
        again = scrape(HostTarget("h", server.url))   # the server still serves
        assert again.sample is not None
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
