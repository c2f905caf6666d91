"""GPU servers: synchronized training iterations and checkpoints, startup phases, inference
power lagging its request rate, fan lag, and noise that grows with the load."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from rackpower_nodes.sim.rack_sim import generate, load_config, preset_config
from rackpower_nodes.sim.scheduler.activity import ScheduledHost

EVERY_S, CKPT_S = 60.0, (10.0, 12.0)


@pytest.fixture(scope="module")
def run():
    """Five minutes of the ai rack: one 2-host training job from t = 0, checkpoints every
    60 s; an inference service with frequent surges."""
    raw = yaml.safe_load(preset_config("ai").read_text())
    classes = raw["scheduler"]["classes"]
    train = copy.deepcopy(classes["train-2node"])
    train.update(rate_per_h=0, duration_s=7200, duration_sigma=0, actual_sigma=0, at_start=1,
                 startup_s=[40, 40])
    train["training"].update(checkpoint_every_s=EVERY_S, checkpoint_s=list(CKPT_S),
                             iter_s=[1.0, 1.0])
    infer = copy.deepcopy(classes["inference"])
    infer["inference"].update(surge_rate_per_h=40, surge_s=[20, 40], surge_gain=[1.8, 2.0])
    raw["scheduler"] = {"dispatch_delay_s": 5, "classes": {"train": train, "infer": infer}}
    return generate(300 / 3600, seed=6, config=raw)


def _col(data, name):
    return data.power_w[:, data.names.index(name)].astype(np.float64)


def _job(data, prefix):
    return next(r for r in data.events.records if r.job_id.startswith(prefix))


def test_training_hosts_of_one_job_swing_in_phase(run):
    job = _job(run, "train")
    a, b = (_col(run, h) for h in job.hosts)
    t = run.t_s
    main = (t > job.start_unix - run.start_unix + 60.0)
    assert main.sum() > 1000
    swing = np.percentile(a[main], 95) - np.percentile(a[main], 5)
    assert swing > 8 * (550 - 300) * 0.8          # ~2 kW between compute and communication
    da, db = np.diff(a[main]), np.diff(b[main])
    assert np.corrcoef(da, db)[0, 1] > 0.9
    idle = _col(run, "gpu03")                     # no job: never swings
    assert np.percentile(idle, 95) - np.percentile(idle, 5) < 100


def test_checkpoints_come_at_the_configured_interval(run):
    job = _job(run, "train")
    p = _col(run, job.hosts[0]).reshape(-1, int(run.rate_hz)).mean(axis=1)   # 1 s means
    start_main = int(job.start_unix - run.start_unix) + 41
    low = p[start_main:] < 3500.0                 # checkpoint: boards at ~150 W
    edges = np.flatnonzero(np.diff(low.astype(int)) == 1) + 1
    lengths = [np.argmin(low[e:]) if not low[e:].all() else len(low) - e for e in edges]
    assert len(edges) >= 3
    np.testing.assert_allclose(np.diff(edges), EVERY_S, atol=1.5)
    assert all(CKPT_S[0] - 2 <= n <= CKPT_S[1] + 2 for n in lengths[:-1])


def test_startup_phase_comes_before_the_main_power(run):
    job = _job(run, "train")
    p = _col(run, job.hosts[0])
    t = run.t_s - (job.start_unix - run.start_unix)
    startup = p[(t > 2) & (t < 38)]
    main = p[(t > 45) & (t < 100)]
    assert startup.max() < 2500.0 < main.mean()
    util = run.util[:, run.names.index(job.hosts[0])]
    assert util[(t > 2) & (t < 38)].mean() > util[(t > 45) & (t < 100)].mean()


def test_inference_power_follows_its_request_rate_one_to_three_s_later(run):
    host = _job(run, "infer").hosts[0]
    rate = run.telemetry["app_requests_per_s"][:, run.hosts.index(host)].astype(np.float64)
    power = _col(run, host).reshape(-1, int(run.rate_hz)).mean(axis=1)
    assert rate.max() > 1.5 * np.median(rate[rate > 0])          # surges happened
    dr, dp = np.diff(rate)[60:], np.diff(power)[60:]
    corr = [np.corrcoef(dr[:len(dr) - k], dp[k:])[0, 1] for k in range(6)]
    assert 1 <= int(np.argmax(corr)) <= 3, corr
    assert corr[0] < max(corr) - 0.2
    # the host's network input carries the requests: it leads the power as the rate does
    rx = run.telemetry["net_rx_bytes_per_s"][:, run.hosts.index(host)].astype(np.float64)
    assert np.corrcoef(rx[60:], rate[60:])[0, 1] > 0.9


def _host(gpu):
    class _NoJobs:
        cfg = type("C", (), {"classes": ()})()

    return ScheduledHost(_NoJobs(), "gpu01", gpu, 0.1, 10,
                         [np.random.default_rng(i) for i in range(4)])


def test_fans_lag_the_boards_by_tens_of_seconds():
    gpu = load_config(preset_config("ai")).components[0].model.gpu
    host = _host(gpu)
    step = np.concatenate([np.full(600, gpu.idle_w), np.full(3000, gpu.compute_w)])
    p = host._gpu_wall(step).reshape(-1, 10).mean(axis=1)      # 1 s means
    jump = p[62] - p[58]                                        # the boards: at once
    assert jump > 0.8 * 8 * (gpu.compute_w - gpu.idle_w)
    rise = p[240:].mean() - p[62]                              # the fans: later
    assert rise > 0.6 * (gpu.fan_max_w - gpu.fan_min_w)
    half = int(np.argmax(p[60:] - p[62] > rise / 2))
    assert 10 <= half <= 100, half


def test_noise_grows_with_the_load():
    gpu = load_config(preset_config("ai")).components[0].model.gpu
    host = _host(gpu)
    n = 6000
    idle = host._gpu_wall(np.full(n, gpu.idle_w))[3000:]
    busy = host._gpu_wall(np.full(n, gpu.compute_w))[3000:]
    assert busy.std() > 5 * idle.std()
    assert busy.mean() > idle.mean() + 8 * (gpu.compute_w - gpu.idle_w)
