"""Cost of the workload-event features and of the calibrated, challenged forecast service.

    .venv/bin/python benchmarks/bench_event_features.py [--jobs 50 300] [--cycles 1200]

Prints markdown tables:
- event features of one host over a day of 0.1 s steps (864 000 rows) from a random job log:
  the piecewise path (``event_windows.log_rows``, what training uses) and the per-step reference
  (``workload_events.event_features``, timed on the first 20 000 steps and scaled to the day;
  the two are checked equal on those steps);
- ``ForecastService.forecast`` per cycle for the 16 components of the simulated rack with an
  EWMA model, the peak calibration off and on (wall time in this process; the machine's load
  shows in it).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))           # benchmark this checkout, not the installed copy

from rackpower_nodes.core.forecast.adaptive import CalibrationSettings  # noqa: E402
from rackpower_nodes.core.forecast.baselines import EwmaForecaster  # noqa: E402
from rackpower_nodes.core.forecast.event_windows import log_rows  # noqa: E402
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows  # noqa: E402
from rackpower_nodes.core.forecast.registry import save_model  # noqa: E402
from rackpower_nodes.core.forecast.serving import ForecastService  # noqa: E402
from rackpower_nodes.core.workload_events import JobLog, JobRecord, event_features  # noqa: E402

T0 = 1_700_000_000.0
DAY_STEPS = 864_000
REF_STEPS = 20_000


def day_log(jobs: int, seed: int = 0) -> JobLog:
    """``jobs`` jobs on host ``a`` over a day, announced 10-300 s ahead, 1-60 min long."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(jobs):
        start = T0 + float(rng.uniform(0, 86400))
        lead, duration = float(rng.uniform(10, 300)), float(rng.uniform(60, 3600))
        records.append(JobRecord(f"j{k}", "job", ("a",), start - lead, start, start,
                                 start + duration, duration, float(rng.uniform(0.1, 1.0)),
                                 str(rng.choice(["cpu", "gpu-train"]))))
    return JobLog(records)


def bench_features(job_counts: list[int]) -> None:
    times = T0 + np.arange(DAY_STEPS) * 0.1
    print("| jobs on the host | log_rows, one day | reference, one day (scaled) | speed-up |")
    print("|---|---|---|---|")
    for jobs in job_counts:
        log = day_log(jobs)
        began = time.perf_counter()
        fast = log_rows(log, "a", times)
        t_fast = time.perf_counter() - began
        began = time.perf_counter()
        ref = event_features(log.events_at, "a", times[:REF_STEPS])
        t_ref = (time.perf_counter() - began) * DAY_STEPS / REF_STEPS
        if not np.array_equal(fast[:REF_STEPS], ref):
            raise SystemExit("log_rows differs from event_features")
        print(f"| {jobs} | {t_fast:.2f} s | {t_ref:.0f} s | {t_ref / t_fast:.0f}x |")


def bench_service(cycles: int) -> None:
    from rackpower_nodes.sim.dataset import from_sim
    from rackpower_nodes.sim.rack_sim import generate

    series = from_sim(generate(cycles / 36000 + 0.01, seed=3))
    names = [s.component for s in series]
    ws = build_windows(series, WindowSpec(stride=20))
    path = save_model(EwmaForecaster().fit(ws), tempfile.mkdtemp())
    print("\n| peak calibration | forecast() per cycle, 16 components: p50 | p99 |")
    print("|---|---|---|")
    for on in (False, True):
        service = ForecastService(names, [s.idle_w for s in series], [s.max_w for s in series],
                                  series[0].schedule, calibration=CalibrationSettings(on))
        service.load(str(path))
        t0, lat = series[0].t0_unix, []
        for k in range(cycles):
            service.push_power_block(t0 + k * 0.1 + 0.05, 0.1, names,
                                     np.array([[s.power_w[k]] for s in series]))
            began = time.perf_counter()
            service.forecast(t0 + (k + 1) * 0.1)
            lat.append(time.perf_counter() - began)
        ms = np.array(lat[cycles // 4:]) * 1e3          # after the warm-up
        print(f"| {'on' if on else 'off'} | {np.percentile(ms, 50):.1f} ms | "
              f"{np.percentile(ms, 99):.1f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 300])
    parser.add_argument("--cycles", type=int, default=1200)
    args = parser.parse_args()
    bench_features(args.jobs)
    bench_service(args.cycles)


if __name__ == "__main__":
    main()
