"""A fast-mode run as the health model sees it: :func:`health_frame` -> `HealthFrame`.

One row per simulated second and one column per component: the sensor board's channel
summarised over the second (mean, min, max, standard deviation of
:attr:`~rackpower_nodes.sim.rack_sim.SimData.board_power_w`, sensor faults included), an
independent reference (the PDU outlet meter: the true power's mean times ``1 + N(0,
ref_noise)``, a class-1 meter's ~1 %), and the host's telemetry and what the workload's
scheduler says runs there, and the power supplies' own meters (:func:`psu_meters`: PMBus
READ_PIN / READ_POUT as a BMC reports them over Redfish, every ``PSU_POLL_S`` s).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from rackpower_nodes.core.health import HealthFrame
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import JobLog
from rackpower_nodes.sim.psu_meters import (
    PSU_POLL_S, PSU_READ_NOISE, RNG_BRANCH, drift_series, meter_errors, meter_readings,
    psu_loss, psu_output_w, psu_ratings_w)
from rackpower_nodes.sim.scheduler import parse_scheduler

if TYPE_CHECKING:
    from rackpower_nodes.sim.rack_sim import SimData

__all__ = ["PSU_POLL_S", "health_frame", "job_running", "psu_meters"]

_APP_RATE = "app_requests_per_s"    # rack_sim.APP_RATE_FIELD (not imported: no cycle)


def health_frame(data: SimData, ref_noise: float = 0.01, seed: int = 0) -> HealthFrame:
    """Per-second summaries of ``data`` (module docstring); ``t_unix = start_unix + second``.

    ``ref_noise`` is the reference meter's relative error (standard deviation, per reading);
    ``seed`` (with the run's seed) its generator. Switches' host fields are NaN.
    """
    if not (math.isfinite(ref_noise) and ref_noise >= 0):
        raise ValueError(f"ref_noise: {ref_noise!r}, expected a relative error >= 0")
    rate = round(data.rate_hz)
    m = len(data.names)
    n = len(data.power_w) // rate
    board = np.asarray(data.board_power_w[:n * rate]).reshape(n, rate, m)
    true = np.asarray(data.power_w[:n * rate], dtype=np.float64).reshape(n, rate, m)
    rng = np.random.default_rng([int(seed), int(data.seed)])
    ref = true.mean(axis=1) * (1.0 + ref_noise * rng.standard_normal((n, m)))
    f32 = np.float32
    host_cols = [data.names.index(h) for h in data.hosts]

    def per_host(values: np.ndarray) -> np.ndarray:
        out = np.full((n, m), np.nan, dtype=f32)
        out[:, host_cols] = values[:n]
        return out

    tele = data.telemetry
    app = per_host(tele[_APP_RATE]) if _APP_RATE in tele else np.full((n, m), np.nan, f32)
    psu_in, psu_out = psu_meters(data, true.mean(axis=1), seed)
    return HealthFrame(
        data.start_unix + np.arange(n, dtype=np.float64), data.names, data.kinds,
        board.mean(axis=1, dtype=np.float64).astype(f32), board.min(axis=1).astype(f32),
        board.max(axis=1).astype(f32), board.std(axis=1, dtype=np.float64).astype(f32),
        ref.astype(f32), per_host(tele["cpu_util"]),
        per_host(tele["disk_read_bytes_per_s"] + tele["disk_write_bytes_per_s"]),
        per_host(tele["net_rx_bytes_per_s"] + tele["net_tx_bytes_per_s"]), app,
        job_running(data, n), psu_in.astype(f32), psu_out.astype(f32))


def psu_meters(data: SimData, wall_w: np.ndarray, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, components) what each component's PSUs report as their input and output
    power (W), NaN but every ``PSU_POLL_S``-th second, from the true wall power ``wall_w``
    (per-second means, component faults included) and the run's ``psu_efficiency`` faults,
    by the meter model of :mod:`rackpower_nodes.sim.psu_meters` (the one the live simulated
    BMCs serve). Outlet dropouts leave the PSUs ~0 W in and out; the BMC still answers."""
    from rackpower_nodes.sim.rack_sim import load_config

    n, m = wall_w.shape
    loss = psu_loss(data.faults, data.names, np.arange(n, dtype=np.float64))
    rng = np.random.default_rng([int(seed), int(data.seed), RNG_BRANCH])
    drift = drift_series(rng, n, m)
    rating = psu_ratings_w(load_config(data.meta["config"]))
    dc = psu_output_w(wall_w, loss, rating, drift)
    gain, offset = meter_errors(data.names)
    out = np.full((2, n, m), np.nan)
    polled = np.arange(0, n, PSU_POLL_S)
    for k, true in enumerate((wall_w, dc)):
        noise = 1.0 + PSU_READ_NOISE * rng.standard_normal((len(polled), m))
        out[k, polled] = meter_readings(true[polled], gain[k], offset[k], noise)
    return out[0], out[1]


def job_running(data: SimData, seconds: int) -> np.ndarray:
    """(seconds, components): 1 where a job runs on the host at the start of the second, 0
    where the scheduler (or the config's static schedule) speaks for the host and none runs,
    NaN where nothing speaks for it (switches, unscheduled hosts, no schedule)."""
    out = np.full((seconds, len(data.names)), np.nan, dtype=np.float32)
    log, known = _job_log(data, seconds)
    t0 = data.start_unix
    for host in known:
        out[:, data.names.index(host)] = 0.0
    for rec in log.records:
        if not (math.isfinite(rec.start_unix)):
            continue
        end = rec.end_unix if math.isfinite(rec.end_unix) else t0 + seconds
        a = max(0, math.ceil(rec.start_unix - t0))
        b = min(seconds, math.ceil(end - t0))
        cols = [data.names.index(h) for h in rec.hosts if h in known]
        if a < b and cols:
            out[a:b, cols] = 1.0
    return out


def _job_log(data: SimData, seconds: int) -> tuple[JobLog, set[str]]:
    """The run's job history and the hosts it speaks for."""
    raw = data.meta.get("config") or {}
    if data.events is not None:
        sched = parse_scheduler(raw.get("scheduler"), list(data.hosts)) \
            if raw.get("scheduler") is not None else None
        known = set(sched.scheduled_hosts) if sched is not None else set(data.events.hosts)
        return data.events, known & set(data.hosts)
    schedule = WorkloadSchedule.from_config(raw) if raw else WorkloadSchedule()
    if not schedule.jobs:
        return JobLog(), set()
    t0 = data.start_unix
    return schedule.job_log(t0, t0 + seconds), set(data.hosts)
