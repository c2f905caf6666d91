"""A job pending in the queue changes the forecast for its hosts before it starts.

A LightGBM forecaster is trained on synthetic series whose jobs are announced 20-50 s ahead
and whose power rises when they start; served through ForecastService, a WorkloadEvents
snapshot with a job pending on host A raises A's forecast over the horizon before the job
starts (and changes nothing for host B), compared with the same inputs without it.
"""
from __future__ import annotations

import numpy as np
import pytest

from rackpower_nodes.core.forecast.baselines import LightGbmForecaster, LightGbmParams
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows
from rackpower_nodes.core.forecast.registry import save_model
from rackpower_nodes.core.forecast.series import ComponentSeries
from rackpower_nodes.core.forecast.serving import ForecastService
from rackpower_nodes.core.workload_events import JobEvent, JobLog, JobRecord, WorkloadEvents

T0 = 1_700_000_000.0
SPEC = WindowSpec(step_s=0.5, history_steps=10, horizon_steps=20, coarse=(4,), stride=2)
IDLE_W, MAX_W, JOB_W = 80.0, 300.0, 160.0        # a job of size u adds u * JOB_W


def host_series(host: str, seed: int, hours: float = 1.5) -> ComponentSeries:
    """Idle with noise; jobs announced 20-50 s ahead start on time and hold their size."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / SPEC.step_s)
    t = T0 + np.arange(n) * SPEC.step_s
    power = IDLE_W + rng.normal(0.0, 2.0, n)
    records, start = [], T0 + 60.0
    while start < t[-1] - 200.0:
        duration, size = float(rng.uniform(40, 120)), float(rng.choice([0.5, 0.9]))
        lead = float(rng.uniform(20, 50))
        records.append(JobRecord(f"{host}-{len(records)}", "train", (host,), start - lead, start,
                                 start, start + duration, duration, size, "gpu-train"))
        on = (t >= start) & (t < start + duration)
        power[on] += size * JOB_W
        start += duration + float(rng.uniform(60, 200))
    return ComponentSeries(host, T0, SPEC.step_s, power, np.full((n, 6), np.nan), IDLE_W,
                           MAX_W, source="synthetic", events=JobLog(records))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    ws = build_windows([host_series("hostA", 1), host_series("hostB", 2)], SPEC)
    params = LightGbmParams(n_estimators=120, min_child_samples=20, max_rows=40_000, seed=0)
    return save_model(LightGbmForecaster(params).fit(ws), tmp_path_factory.mktemp("models"))


def serve(model_dir, events: WorkloadEvents | None, now: float) -> np.ndarray:
    """p50/p90/p99 (2, horizon, 3) W of hostA and hostB at ``now`` after 30 s of idle power."""
    service = ForecastService(["hostA", "hostB"], [IDLE_W] * 2, [MAX_W] * 2, spec=SPEC)
    service.load(str(model_dir))
    if events is not None:
        service.push_workload_events(events)
    rng = np.random.default_rng(7)
    t0 = now - 30.0
    service.push_power_block(t0, 0.1, ["hostA", "hostB"], IDLE_W + rng.normal(0, 2.0, (2, 300)))
    fc = service.forecast(now)
    assert not fc.fallback.any(), fc.reason
    assert (fc.p50_w <= fc.p90_w).all() and (fc.p90_w <= fc.p99_w).all()
    return np.stack([fc.p50_w, fc.p90_w, fc.p99_w], axis=-1)


def test_a_pending_job_raises_its_hosts_forecast_before_it_starts(model_dir):
    now = T0 + 10_000.0
    start = now + 4.0                                  # within the 10 s horizon
    job = JobEvent("42", "train", ("hostA",), "pending", start, 300.0, 0.9, "gpu-train")
    with_job = serve(model_dir, WorkloadEvents(now - 25.0, (job,), "test"), now)
    without = serve(model_dir, None, now)
    nothing = serve(model_dir, WorkloadEvents(now - 25.0, (), "test"), now)
    np.testing.assert_array_equal(without, nothing)   # an empty queue is "no job"
    after = np.arange(1, SPEC.horizon_steps + 1) * SPEC.step_s > start - now + 1.0
    rise = with_job[0, after, 0].mean() - without[0, after, 0].mean()
    assert rise > 0.5 * 0.9 * JOB_W, f"p50 of host A rose {rise:.1f} W after the start"
    assert with_job[0, after, 2].mean() > without[0, after, 2].mean() + 0.5 * 0.9 * JOB_W
    np.testing.assert_array_equal(with_job[1], without[1])                  # host B unchanged
    early = serve(model_dir, WorkloadEvents(now - 25.0, (job,), "test"), start - 40.0)
    base = serve(model_dir, None, start - 40.0)       # 40 s ahead: beyond the horizon
    assert abs(early[0, :, 0].mean() - base[0, :, 0].mean()) < 0.25 * 0.9 * JOB_W
