"""A fast-mode run written as a rosbag2 bag, the way `ros2 bag record` of the live graph would.

`write_bag` turns :class:`~rackpower_nodes.sim.rack_sim.SimData` into an MCAP rosbag2 bag of
`<namespace>/power_samples` (one `PowerSamples` batch per `batch_s`, current per sample and
the mean/peak power per channel) and `<namespace>/host_telemetry` (one `HostTelemetry` per
second, stamped at the end of the second it averages). Training from bags
(`rackpower-train --bag`, the retrain scheduler) then works on simulated history exactly as on
recorded history. Written with rosbags; our message definitions come from
`sources.bags.message_typestore()`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rackpower_nodes.core.telemetry import calendar_features


def write_bag(data, path: str | Path, namespace: str = "/rack_01", batch_s: float = 1.0,
              frame_id: str = "rack_01") -> Path:
    """Write `data` (SimData) to the bag folder `path` (must not exist); returns it.

    `batch_s` is the PowerSamples batch length, s (a whole number of samples at the run's
    rate)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from rackpower_nodes.sources.bags import message_typestore

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: exists already; a bag is written into a new folder")
    rate = int(round(data.rate_hz))
    per_batch = int(round(batch_s * rate))
    if per_batch < 1 or not math.isclose(per_batch, batch_s * rate, rel_tol=1e-9):
        raise ValueError(f"batch_s = {batch_s!r}: expected a whole number of samples at "
                         f"{rate} Hz")
    store = message_typestore()
    types = store.types
    volts = float(data.meta.get("nominal_v", 230.0)) * float(data.meta.get("power_factor", 1.0))
    names = list(data.names)
    n_batches = len(data.power_w) // per_batch
    seconds = len(next(iter(data.telemetry.values()))) if data.telemetry else 0
    mem_total = data.meta.get("mem_total_bytes", [])
    tz = float(data.meta.get("tz_offset_h", 0.0)) * 3600.0

    def header(t: float):
        ns = round(t * 1e9)
        return types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
            frame_id=frame_id)

    path.parent.mkdir(parents=True, exist_ok=True)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        samples_conn = writer.add_connection(f"{namespace}/power_samples",
                                             "rackpower/msg/PowerSamples", typestore=store)
        tele_conn = writer.add_connection(f"{namespace}/host_telemetry",
                                          "rackpower/msg/HostTelemetry", typestore=store)
        next_second = 1
        for b in range(n_batches):
            t0 = data.start_unix + b * batch_s
            while next_second <= seconds and data.start_unix + next_second <= t0:
                _write_telemetry(writer, tele_conn, store, data, next_second - 1, header,
                                 mem_total, tz)
                next_second += 1
            block = np.asarray(data.power_w[b * per_batch:(b + 1) * per_batch],
                               dtype=np.float32).T                      # (channels, samples)
            msg = types["rackpower/msg/PowerSamples"](
                header=header(t0), sample_period_s=1.0 / rate, sample_count=per_batch,
                first_sequence=b * per_batch, first_board_time_us=round(b * batch_s * 1e6),
                channel_ids=names, current_a=(block / volts).astype(np.float32).reshape(-1),
                voltage_v=np.full(len(names), volts, np.float32),
                mean_power_w=block.mean(axis=1).astype(np.float32),
                peak_power_w=block.max(axis=1).astype(np.float32),
                total_power_w=float(block.mean(axis=1).sum()), frames_lost=0)
            writer.write(samples_conn, round(t0 * 1e9),
                         store.serialize_cdr(msg, msg.__msgtype__))
        while next_second <= seconds:
            _write_telemetry(writer, tele_conn, store, data, next_second - 1, header,
                             mem_total, tz)
            next_second += 1
    return path


def _write_telemetry(writer, conn, store, data, second: int, header, mem_total, tz) -> None:
    """The HostTelemetry of `second` (its mean), stamped at the end of that second."""
    types = store.types
    t = data.start_unix + second + 1.0
    hosts = []
    for h, name in enumerate(data.hosts):
        v = {f: float(a[second, h]) for f, a in data.telemetry.items()}
        total = float(mem_total[h]) if h < len(mem_total) else math.nan
        hosts.append(types["rackpower/msg/HostMetrics"](
            host_id=name, up=True, stale=False, age_s=0.0, last_error="",
            cpu_util=v["cpu_util"], mem_used_fraction=v["mem_used_bytes"] / total,
            mem_used_bytes=v["mem_used_bytes"], net_rx_bps=v["net_rx_bytes_per_s"],
            net_tx_bps=v["net_tx_bytes_per_s"], disk_read_bps=v["disk_read_bytes_per_s"],
            disk_write_bps=v["disk_write_bytes_per_s"], active_job="",
            next_job_in_s=math.nan, next_job_expected_util=0.0, next_job_duration_s=0.0))
    cal = calendar_features(t, int(tz))
    msg = types["rackpower/msg/HostTelemetry"](
        header=header(t), hosts=hosts, hour_of_day=cal["hour_of_day"],
        day_of_week=int(cal["day_of_week"]), is_weekend=bool(cal["is_weekend"]),
        time_of_day_sin=cal["tod_sin"], time_of_day_cos=cal["tod_cos"],
        day_of_week_sin=cal["dow_sin"], day_of_week_cos=cal["dow_cos"])
    writer.write(conn, round(t * 1e9), store.serialize_cdr(msg, msg.__msgtype__))
