"""Simulated days as `HealthFrame`s for the health model's tests (`sim_frame`).

The simulator's faults package may give its own ``health_frame``; this helper only needs the
fault-free day: per second, the board's mean/min/max/std of the 10 Hz samples, the reference
meter equal to the board's mean, the host's telemetry and the job log's ``job_running``.
"""
from __future__ import annotations

import functools

import numpy as np

from rackpower_nodes.core.health import HealthFrame
from rackpower_nodes.sim.rack_sim import generate


def frame_from_sim(data) -> HealthFrame:
    rate = int(data.rate_hz)
    secs = len(data.power_w) // rate
    p = data.power_w[:secs * rate].reshape(secs, rate, -1).astype(np.float64)
    m = len(data.names)
    t = data.start_unix + np.arange(secs, dtype=np.float64)
    host_col = {h: i for i, h in enumerate(data.hosts)}
    tele = data.telemetry

    def per_comp(values) -> np.ndarray:
        out = np.full((secs, m), np.nan)
        for j, name in enumerate(data.names):
            if name in host_col:
                out[:, j] = values(host_col[name])[:secs]
        return out

    util = per_comp(lambda h: tele["cpu_util"][:, h])
    disk = per_comp(lambda h: tele["disk_read_bytes_per_s"][:, h]
                    + tele["disk_write_bytes_per_s"][:, h])
    net = per_comp(lambda h: tele["net_rx_bytes_per_s"][:, h] + tele["net_tx_bytes_per_s"][:, h])
    app = (per_comp(lambda h: tele["app_requests_per_s"][:, h])
           if "app_requests_per_s" in tele else np.full((secs, m), np.nan))
    job = np.full((secs, m), np.nan)
    if data.events is not None:
        job[:] = 0.0
        for j, kind in enumerate(data.kinds):
            if kind == "switch":
                job[:, j] = np.nan
        for r in data.events.records:
            if not np.isfinite(r.start_unix):
                continue
            a = int(max(0, np.floor(r.start_unix - data.start_unix)))
            end = r.end_unix if np.isfinite(r.end_unix) else t[-1] + 1
            b = int(min(secs, np.ceil(end - data.start_unix)))
            for h in r.hosts:
                if h in data.names:
                    job[a:b, data.names.index(h)] = 1.0
    return HealthFrame(t, data.names, data.kinds, p.mean(axis=1), p.min(axis=1), p.max(axis=1),
                       p.std(axis=1), p.mean(axis=1), util, disk, net, app, job)


@functools.lru_cache(maxsize=8)
def sim_frame(hours: float, seed: int, preset: str = "mixed") -> HealthFrame:
    """A fault-free simulated run of ``preset`` as a frame (cached: treat it as read-only)."""
    return frame_from_sim(generate(hours, seed=seed, preset=preset))
