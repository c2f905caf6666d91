"""Pure telemetry core: parsing, rates, counter resets, calendar, and a real node_exporter."""
from __future__ import annotations

import math
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import psutil
import pytest

from rackpower_nodes.core import telemetry
from rackpower_nodes.core.telemetry import (
    HostTarget,
    LocalHostReader,
    RateTracker,
    RawSample,
    ScrapeError,
    TelemetryCollector,
    calendar_features,
    fetch,
    local_host_rates,
    parse_node_exporter,
    scrape,
)

CPU_TOL = 0.05      # absolute, exporter vs psutil over the same interval
MEM_TOL = 0.02      # absolute, used fraction

TEXT = """\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 100
node_cpu_seconds_total{cpu="0",mode="user"} 50
node_cpu_seconds_total{cpu="1",mode="idle"} 120
node_cpu_seconds_total{cpu="1",mode="iowait"} 5
node_cpu_seconds_total{cpu="1",mode="system"} 25
node_memory_MemTotal_bytes 1000
node_memory_MemAvailable_bytes 250
node_network_receive_bytes_total{device="eth0"} 1000
node_network_receive_bytes_total{device="eth1"} 500
node_network_receive_bytes_total{device="lo"} 99999
node_network_transmit_bytes_total{device="eth0"} 300
node_network_transmit_bytes_total{device="lo"} 99999
node_disk_read_bytes_total{device="sda"} 4000
node_disk_read_bytes_total{device="sda1"} 4000
node_disk_read_bytes_total{device="nvme0n1"} 1000
node_disk_read_bytes_total{device="nvme0n1p2"} 1000
node_disk_read_bytes_total{device="dm-0"} 777
node_disk_written_bytes_total{device="sda"} 2000
node_time_seconds 1.7e9
node_boot_time_seconds 1.6e9
"""


def sample(cpu=None, n_cpus=2, net=None, disk=None, t=None, boot=1.6e9, mem=(1000.0, 400.0)):
    """A RawSample with per-device counters given as {'dev': bytes} (same for rx/tx, r/w)."""
    return RawSample(cpu_seconds_by_mode=cpu or {"idle": 10.0, "user": 10.0}, n_cpus=n_cpus,
                     mem_total_bytes=mem[0], mem_available_bytes=mem[1],
                     net_rx_by_device=net, net_tx_by_device=net,
                     disk_read_by_device=disk, disk_written_by_device=disk,
                     host_time_s=t, boot_time_s=boot)


def test_parse_sums_and_exclusions():
    s = parse_node_exporter(TEXT, "h")
    assert s.n_cpus == 2
    assert s.cpu_seconds_by_mode["idle"] == 220 and s.cpu_seconds_by_mode["iowait"] == 5
    assert s.cpu_seconds_by_mode["steal"] == 0
    assert (s.mem_total_bytes, s.mem_available_bytes) == (1000, 250)
    assert s.net_rx_bytes == 1500 and s.net_tx_bytes == 300          # lo excluded
    assert s.disk_read_bytes == 5000                                  # partitions, dm excluded
    assert s.disk_written_bytes == 2000
    assert (s.host_time_s, s.boot_time_s) == (1.7e9, 1.6e9)


def test_parse_missing_optional_series_is_none():
    s = parse_node_exporter('node_cpu_seconds_total{cpu="0",mode="idle"} 1\n')
    assert s.n_cpus == 1
    assert s.mem_total_bytes is None and s.net_rx_bytes is None and s.disk_read_bytes is None
    assert s.host_time_s is None


@pytest.mark.parametrize("text", ["<html>oops</html>\n", "foo bar baz\n",
                                  "node_memory_MemTotal_bytes 1\n", ""])
def test_parse_garbage_raises(text):
    with pytest.raises(ScrapeError, match="garbage") as err:
        parse_node_exporter(text, "rack3")
    assert err.value.host == "rack3" and "rack3" in str(err.value)


def test_rates_from_host_clock():
    tr = RateTracker()
    assert tr.update(sample(t=100.0, net={"eth0": 0.0}, disk={"sda": 0.0}), 5000.0) is None
    cpu = {"idle": 10.0 + 1.5, "iowait": 0.0, "user": 10.0 + 0.5}
    r = tr.update(sample(cpu, t=102.0, net={"eth0": 2000.0}, disk={"sda": 500.0}), 5000.3)
    assert r.interval_s == 2.0                            # host clock, not arrival times
    assert r.cpu_util == pytest.approx(0.25)
    assert r.net_rx_bps == 1000.0 and r.net_tx_bps == 1000.0
    assert r.disk_read_bps == 250.0 and r.disk_write_bps == 250.0
    assert r.mem_used_fraction == pytest.approx(0.6) and r.mem_used_bytes == 600.0
    assert not r.counter_reset


def test_rates_fall_back_to_arrival_times():
    tr = RateTracker()
    tr.update(sample(net={"eth0": 0.0}), 10.0)
    assert tr.update(sample(net={"eth0": 400.0}), 14.0).net_rx_bps == 100.0
    assert tr.update(sample(net={"eth0": 400.0}), 14.0) is None   # no time passed


def test_counter_decrease_gives_no_rate_then_rebaselines():
    tr = RateTracker()
    tr.update(sample(t=0.0, net={"eth0": 10_000.0}, disk={"sda": 10.0}), 0.0)
    r = tr.update(sample(t=1.0, net={"eth0": 50.0}, disk={"sda": 20.0}), 1.0)
    assert r.counter_reset and r.net_rx_bps is None and r.net_tx_bps is None
    assert r.disk_read_bps == 10.0                     # unaffected counters keep their rate
    r = tr.update(sample(t=2.0, net={"eth0": 150.0}, disk={"sda": 30.0}), 2.0)
    assert not r.counter_reset and r.net_rx_bps == 100.0


def test_reboot_detected_by_boot_time_even_if_counters_grew():
    tr = RateTracker()
    tr.update(sample({"idle": 1.0, "user": 1.0}, t=0.0, net={"eth0": 10.0}), 0.0)
    r = tr.update(sample({"idle": 50.0, "user": 50.0}, t=1.0, net={"eth0": 1e12},
                         boot=1.6e9 + 3600), 1.0)
    assert r.counter_reset
    assert (r.cpu_util, r.net_rx_bps, r.disk_read_bps) == (None, None, None)
    assert r.mem_used_fraction == pytest.approx(0.6)   # gauges are still good


def test_boot_time_jitter_is_no_reboot():
    tr = RateTracker()
    tr.update(sample(t=0.0, net={"eth0": 0.0}), 0.0)
    for i, boot_shift in enumerate((1.0, -30.0), start=1):   # btime wanders with clock steps
        r = tr.update(sample({"idle": 10.0 + i, "user": 10.0 + i}, t=float(i),
                             net={"eth0": 10.0 * i}, boot=1.6e9 + boot_shift), float(i))
        assert not r.counter_reset and r.cpu_util == 0.5 and r.net_rx_bps == 10.0


def test_cpu_reset_and_iowait_jitter():
    tr = RateTracker()
    tr.update(sample({"idle": 100.0, "iowait": 10.0, "user": 50.0}, t=0.0), 0.0)
    # iowait moved back into idle: not a reset
    r = tr.update(sample({"idle": 101.0, "iowait": 9.5, "user": 50.5}, t=1.0), 1.0)
    assert not r.counter_reset and r.cpu_util == pytest.approx(1 / 2)
    r = tr.update(sample({"idle": 1.0, "iowait": 0.0, "user": 1.0}, t=2.0), 2.0)
    assert r.counter_reset and r.cpu_util is None
    r = tr.update(sample({"idle": 1.0, "user": 1.0}, n_cpus=4, t=3.0), 3.0)
    assert r.counter_reset and r.cpu_util is None      # CPU count changed


def test_missing_series_in_one_scrape():
    tr = RateTracker()
    tr.update(sample(t=0.0, net={"eth0": 0.0}), 0.0)
    r = tr.update(sample(t=1.0, net=None, mem=(None, None)), 1.0)
    assert r.net_rx_bps is None and r.mem_used_fraction is None and not r.counter_reset
    assert tr.update(sample(t=2.0, net={"eth0": 10.0}), 2.0).net_rx_bps is None
    assert tr.update(sample(t=3.0, net={"eth0": 30.0}), 3.0).net_rx_bps == 20.0


def test_device_appearing_does_not_spike():
    tr = RateTracker()
    tr.update(sample(t=0.0, net={"eth0": 0.0}), 0.0)
    r = tr.update(sample(t=1.0, net={"eth0": 100.0, "eth1": 1e12}), 1.0)
    assert r.net_rx_bps == 100.0


def test_fetch_connection_refused_and_bad_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ScrapeError, match="connection refused") as err:
        fetch(HostTarget("h1", f"http://127.0.0.1:{port}/metrics"))
    assert err.value.host == "h1"
    with pytest.raises(ScrapeError, match="bad url"):
        fetch(HostTarget("h1", "ftp://x/metrics"))


def test_fetch_timeout_when_server_never_answers():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/metrics"
        with pytest.raises(ScrapeError, match="timeout"):
            fetch(HostTarget("mute", url, timeout_s=0.2))


@pytest.mark.parametrize(("t_unix", "tz", "hour", "dow", "weekend"), [
    (datetime(2026, 11, 27, 12, tzinfo=UTC).timestamp(), 0, 12.0, 4, 0.0),   # Friday
    (datetime(2026, 11, 27, 23, 30, tzinfo=UTC).timestamp(), 3600, 0.5, 5, 1.0),
    (0.0, 0, 0.0, 3, 0.0),                                          # 1970-01-01, a Thursday
    (datetime(2026, 11, 29, 18, 45, tzinfo=UTC).timestamp(), -7200, 16.75, 6, 1.0),
])
def test_calendar_features(t_unix, tz, hour, dow, weekend):
    f = calendar_features(t_unix, tz)
    assert f["hour_of_day"] == pytest.approx(hour) and f["day_of_week"] == dow
    assert f["is_weekend"] == weekend
    assert f["tod_sin"] == pytest.approx(math.sin(2 * math.pi * hour / 24))
    assert f["tod_cos"] == pytest.approx(math.cos(2 * math.pi * hour / 24))
    week = 2 * math.pi * (dow * 24 + hour) / (7 * 24)
    assert (f["dow_sin"], f["dow_cos"]) == pytest.approx((math.sin(week), math.cos(week)))


def test_local_host_reader():
    reader = LocalHostReader("self")
    first = reader.poll()
    assert first.host == "self" and first.up and not first.stale and first.rates is None
    time.sleep(0.2)
    rates = reader.poll().rates
    assert 0.0 <= rates.cpu_util <= 1.0 and 0.0 < rates.mem_used_fraction < 1.0


def test_local_host_rates():
    tr = RateTracker()
    assert local_host_rates(tr) is None
    time.sleep(0.2)
    r = local_host_rates(tr)
    assert r is not None and r.interval_s > 0 and not r.counter_reset
    assert 0.0 <= r.cpu_util <= 1.0 and 0.0 < r.mem_used_fraction < 1.0
    for bps in (r.net_rx_bps, r.net_tx_bps, r.disk_read_bps, r.disk_write_bps):
        assert bps is None or bps >= 0.0


# --- against the real node_exporter ----------------------------------------------------------

def _psutil_util(a, b) -> float:
    modes = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    total = sum(getattr(b, m) - getattr(a, m) for m in modes)
    idle = sum(getattr(b, m) - getattr(a, m) for m in ("idle", "iowait"))
    return 1.0 - idle / total


def test_real_exporter_agrees_with_psutil(node_exporter):
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # until killed
    try:
        time.sleep(0.2)
        tracker = RateTracker()
        p0 = psutil.cpu_times()
        s1 = scrape(node_exporter)
        p1 = psutil.cpu_times()
        time.sleep(1.5)
        p2 = psutil.cpu_times()
        s2 = scrape(node_exporter)
        p3 = psutil.cpu_times()
        mem = psutil.virtual_memory()
    finally:
        burner.kill()
        burner.wait()
    assert tracker.update(s1.sample, s1.t_s) is None
    r = tracker.update(s2.sample, s2.t_s)
    assert not r.counter_reset and r.interval_s > 0
    assert r.cpu_util > 0.05                                # the burner made it non-trivial
    assert r.cpu_util == pytest.approx(_psutil_util(p0, p3), abs=CPU_TOL)
    assert r.cpu_util == pytest.approx(_psutil_util(p1, p2), abs=CPU_TOL)
    assert r.mem_used_fraction == pytest.approx(1 - mem.available / mem.total, abs=MEM_TOL)
    assert s2.sample.n_cpus == len(psutil.cpu_times(percpu=True))
    for bps in (r.net_rx_bps, r.net_tx_bps, r.disk_read_bps, r.disk_write_bps):
        assert bps is None or bps >= 0.0


def test_collector_over_real_exporter(node_exporter):
    with TelemetryCollector([node_exporter]) as collector:
        first = collector.poll()[0]
        time.sleep(0.5)
        status = collector.poll()[0]
    assert first.up and first.rates is None
    assert status.up and not status.stale and status.last_error == ""
    assert 0.0 <= status.rates.cpu_util <= 1.0 and 0.0 < status.rates.mem_used_fraction < 1.0


def test_body_cap(node_exporter):
    small = HostTarget("real", node_exporter.url, node_exporter.timeout_s, max_body_bytes=1000)
    with pytest.raises(ScrapeError, match=r"real: body too large: more than the 1000-byte cap"):
        fetch(small)


def test_real_body_is_small_and_parses_only_the_used_series(node_exporter):
    body = fetch(node_exporter)
    assert 10_000 < len(body.encode()) < telemetry.MAX_BODY_BYTES // 10
    used = telemetry._used_lines(body, "real").splitlines()
    assert 0 < len(used) < len(body.splitlines()) / 5
    assert {line.split("{")[0].split()[0] for line in used} <= set(telemetry.USED_SERIES)
    assert parse_node_exporter(body, "real") == parse_node_exporter("\n".join(used), "real")


def test_unused_series_and_comments_are_not_parsed():
    junk = "".join(f'junk_total{{id="{i}"}} {i}\n' for i in range(5 * telemetry.MAX_SAMPLES))
    s = parse_node_exporter("# HELP x ok\n" + junk + TEXT + "node_time_seconds_x{a=\"b\"} 1\n")
    assert s == parse_node_exporter(TEXT)
    assert s.host_time_s == 1.7e9


def test_too_many_samples_of_a_used_series_is_garbage():
    lines = "".join(f'node_cpu_seconds_total{{cpu="{i}",mode="idle"}} 1\n'
                    for i in range(telemetry.MAX_SAMPLES + 1))
    with pytest.raises(ScrapeError, match=f"h1: garbage: more than {telemetry.MAX_SAMPLES}"):
        parse_node_exporter(lines, "h1")


UNUSUAL = [  # used lines of shapes the one-findall parser leaves to the line-by-line one
    'node_cpu_seconds_total{cpu="5",mode="us\\"er"} 7\n',      # an escaped quote
    'node_cpu_seconds_total {cpu="5",mode="user"} 7\n',         # a space before the labels
    'node_cpu_seconds_total{ cpu = "5" , mode="user" } 7\n',    # spaces inside them
    'node_cpu_seconds_total{cpu="5",mode="user"} 7\r\n',        # CRLF
]


def test_the_whole_body_parser_agrees_with_the_line_parser_on_plain_text():
    body = TEXT + 'node_cpu_seconds_total{cpu="2",mode="user",} 3 1700000000000\n'
    assert telemetry.exporter._series_at_once(body, "h") == \
        telemetry.exporter._series_by_line(body, "h")
    assert parse_node_exporter(body, "h").cpu_seconds_by_mode["user"] == 53


@pytest.mark.parametrize("line", UNUSUAL)
def test_a_used_line_of_an_unusual_shape_is_parsed_line_by_line(line):
    with pytest.raises(ValueError):
        telemetry.exporter._series_at_once(TEXT + line, "h")
    s = parse_node_exporter(TEXT + line, "h")
    assert s.n_cpus == 3 and sum(s.cpu_seconds_by_mode.values()) == 300 + 7


@pytest.mark.parametrize("line", ['node_cpu_seconds_total{cpu="0"mode="idle"} 1\n',
                                  'node_cpu_seconds_total{cpu="0",mode="idle"} one\n'])
def test_a_broken_used_line_is_still_garbage_naming_it(line):
    with pytest.raises(ScrapeError, match="h: garbage: not exposition text") as err:
        parse_node_exporter(TEXT + line, "h")
    assert line.strip()[:30] in str(err.value)



def test_a_close_between_a_poll_s_check_and_its_next_scrape_ends_the_poll_quietly():
    # close() from the node's shutdown lands after poll() looked whether it was closed and
    # before it started the next scrape: the pool is shut down by then
    collector = TelemetryCollector([HostTarget(f"h{i}", "http://127.0.0.1:9/metrics", 0.2)
                                    for i in range(3)])
    submit = collector._pool.submit

    def submit_after_a_close(*args, **kwargs):
        collector.close()
        return submit(*args, **kwargs)

    collector._pool.submit = submit_after_a_close
    statuses = collector.poll()
    assert [s.up for s in statuses] == [False] * 3
    assert all("not scraped (the collector is closed)" in s.last_error for s in statuses)


def test_close_ends_a_poll_waiting_on_an_exporter_that_never_answers(caplog):
    silent = socket.create_server(("127.0.0.1", 0))      # the kernel accepts; nobody answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
    collector = TelemetryCollector([HostTarget("silent", url, 30.0)])
    out: list = []
    poller = threading.Thread(target=lambda: out.append(collector.poll()))
    try:
        poller.start()
        end = time.monotonic() + 30
        while collector._hosts["silent"].in_flight is None and time.monotonic() < end:
            time.sleep(0.01)
        collector.close()
        poller.join(60)
        assert not poller.is_alive() and out, "poll() did not return after close()"
        assert not collector._hosts["silent"].in_flight.done()   # it did not wait the scrape
        assert "timeout (scrape still running)" in out[0][0].last_error
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        assert collector.poll()[0].up is False                    # closed: nothing started
    finally:
        silent.close()
