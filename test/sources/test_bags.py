"""The rosbag2 reader (sources/bags.py) on bags written with rosbags' Writer (MCAP and
sqlite3): lost batches and a sequence jump split the series where the frames say, host
telemetry is held (and dropped when stale), a missing namespace is named; and the live twin of
training (OnlineWindows fed the bag's messages) gives the same windows as the reader."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.series import SMALL, T0

from rackpower_nodes.core.forecast.features import build_windows
from rackpower_nodes.core.forecast.online import OnlineWindows
from rackpower_nodes.core.forecast.series import DatasetError
from rackpower_nodes.sources.bags import from_bag, message_typestore


N_BATCH, PER_BATCH, RATE = 260, 50, 1000          # 13 s at 1 kHz, 20 batches per second
SKIPPED = range(120, 124)                         # 0.2 s lost: sequence and time gap
SEQ_JUMP = 181                                    # claims 60 lost frames (60 ms), no time gap
JUMP_FRAMES = 60


def _bag_power() -> np.ndarray:
    """(2, samples) W of channels srv01 and tor-a (samples of skipped batches included)."""
    rng = np.random.default_rng(11)
    current = rng.uniform(0.3, 1.2, (2, N_BATCH * PER_BATCH)).astype(np.float32)
    return current.astype(np.float64) * np.float32(230.0)


def _bag_telemetry() -> list[tuple[float, float, bool]]:
    """(stamp, cpu_util, stale) of srv01's telemetry; none after 6.5 s."""
    return [(T0 + s + 0.5, s / 20.0, s == 3) for s in range(7)]


def _write_bag(path, storage: str) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = message_typestore()
    T = store.types

    def header(t_ns: int):
        stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
        return T["std_msgs/msg/Header"](stamp=stamp, frame_id="board")

    current = (_bag_power() / np.float32(230.0)).astype(np.float32)
    out = []
    for b in (b for b in range(N_BATCH) if b not in SKIPPED):
        t_ns = int(T0) * 10**9 + b * 50_000_000
        cur = current[:, b * PER_BATCH:(b + 1) * PER_BATCH]
        msg = T["rackpower/msg/PowerSamples"](
            header=header(t_ns), sample_period_s=1.0 / RATE, sample_count=PER_BATCH,
            first_sequence=b * PER_BATCH + JUMP_FRAMES * (b >= SEQ_JUMP),
            first_board_time_us=b * 50_000,
            channel_ids=["srv01", "tor-a"], current_a=cur.reshape(-1),
            voltage_v=np.full(2, 230.0, np.float32), mean_power_w=cur.mean(axis=1) * 230,
            peak_power_w=cur.max(axis=1) * 230, total_power_w=float(cur.mean() * 460),
            frames_lost=200 if b == SKIPPED[-1] + 1 else JUMP_FRAMES * int(b == SEQ_JUMP))
        out.append((t_ns, 0, store.serialize_cdr(msg, msg.__msgtype__)))
    for t, cpu, stale in _bag_telemetry():
        host = T["rackpower/msg/HostMetrics"](
            host_id="srv01", up=True, stale=stale, age_s=0.5, last_error="", cpu_util=cpu,
            mem_used_fraction=0.5, mem_used_bytes=1e9, net_rx_bps=1e3, net_tx_bps=2e3,
            disk_read_bps=0.0, disk_write_bps=5e4, active_job="", next_job_in_s=math.nan,
            next_job_expected_util=0.0, next_job_duration_s=0.0)
        msg = T["rackpower/msg/HostTelemetry"](
            header=header(round(t * 1e9)), hosts=[host], hour_of_day=0.0, day_of_week=0,
            is_weekend=False, time_of_day_sin=0.0, time_of_day_cos=1.0, day_of_week_sin=0.0,
            day_of_week_cos=1.0)
        out.append((round(t * 1e9), 1, store.serialize_cdr(msg, msg.__msgtype__)))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = [writer.add_connection("/rack_07/power_samples", "rackpower/msg/PowerSamples",
                                       typestore=store),
                 writer.add_connection("/rack_07/host_telemetry",
                                       "rackpower/msg/HostTelemetry", typestore=store)]
        for t_ns, c, data in sorted(out, key=lambda m: m[0]):
            writer.write(conns[c], t_ns, data)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "mcap_bag"
    _write_bag(path, "mcap")
    return path


def _expected_segments(power: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(first step, step means) of each segment, computed from sample indices."""
    spans = [(0, SKIPPED[0]), (SKIPPED[-1] + 1, SEQ_JUMP), (SEQ_JUMP, N_BATCH)]
    out = []
    for a, b in spans:
        k = np.arange(a * PER_BATCH, b * PER_BATCH)
        steps = k // 100
        means = np.bincount(steps - steps[0], weights=power[k]) / np.bincount(steps - steps[0])
        out.append((int(steps[0]), means))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_from_bag_round_trip_with_gaps(tmp_path, storage):
    _write_bag(tmp_path / "bag", storage)
    series = from_bag(tmp_path / "bag", namespace="rack_07")
    power = _bag_power()
    for c, name in enumerate(["srv01", "tor-a"]):
        got = [s for s in series if s.component == name]
        want = _expected_segments(power[c])
        assert len(got) == 3
        for s, (first, means) in zip(got, want, strict=True):
            assert s.t0_unix == pytest.approx(T0 + first * 0.1)
            np.testing.assert_allclose(s.power_w, means, rtol=1e-6)


def test_from_bag_holds_host_telemetry(bag):
    srv01 = [s for s in from_bag(bag) if s.component == "srv01"]
    tel = np.concatenate([s.telemetry for s in srv01])
    t = np.concatenate([s.t_unix for s in srv01]) - T0
    expect = np.full(len(t), np.nan)
    for stamp, cpu, stale in _bag_telemetry():
        expect[t >= stamp - T0 - 1e-6] = np.nan if stale else cpu
    expect[t >= 6.5 + 5.0 + 0.1 - 1e-6] = np.nan        # newest message older than 5 s
    np.testing.assert_allclose(tel[:, 0], expect, rtol=1e-6)
    assert np.isnan(tel[:, 0]).any() and np.isfinite(tel[:, 0]).any()
    tor = [s for s in from_bag(bag) if s.component == "tor-a"]
    assert all(np.isnan(s.telemetry).all() for s in tor)


def test_from_bag_names_a_missing_namespace(bag):
    with pytest.raises(DatasetError, match="rack_99"):
        from_bag(bag, namespace="rack_99")


def test_online_windows_match_from_bag_across_lost_frames(bag):
    from rosbags.highlevel import AnyReader

    series = from_bag(bag)
    ws = build_windows(series, SMALL)
    rows = {(c, round(t, 1)): i for i, (c, t) in enumerate(zip(ws.component, ws.t_unix - T0))}
    specs = {s.component: (s.idle_w, s.max_w) for s in series}
    names = ["srv01", "tor-a"]
    online = OnlineWindows(SMALL, names, [specs[n][0] for n in names],
                           [specs[n][1] for n in names])
    matched, not_ready_after_gap = set(), 0
    with AnyReader([bag], default_typestore=message_typestore()) as reader:
        for conn, t_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype.endswith("HostTelemetry"):
                online.push_host_telemetry(msg)
                continue
            online.push_samples(msg)
            t_query = t_ns * 1e-9 + 0.05
            x, last, ready, age = online.window(t_query)
            t_last = round(t_query - age[0] - 0.1 - T0, 1)     # start of the last closed step
            not_ready_after_gap += 6.2 <= t_last < 6.2 + 1.8 and not ready.any()
            for i, name in enumerate(names):
                row = rows.get((name, t_last))
                if row is not None:
                    assert ready[i], f"{name} at {t_last}"
                    np.testing.assert_allclose(x[i], ws.x[row], atol=1e-5)
                    assert last[i] == ws.last[row]
                    matched.add(row)
    assert matched == set(range(len(ws)))
    assert not_ready_after_gap > 0
