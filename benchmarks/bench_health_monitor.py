"""Benchmark of the health_monitor node's work per second, in one process (no DDS).

What the node does each second on a rack of 16 components, timed on its own: the batches of
power_samples going into `HealthStream` (20 batches of 50 samples per channel: the board at
1 kHz, published at 20 Hz), one telemetry poll, `pop()` of the complete second, and
`HealthMonitor.update()` on it, without a model (the physical checks) and with a learned
`HealthModel` (half an hour of the simulated rack, training seed 100). The board's samples
are the simulated rack's 10 Hz power held to 1 kHz with 0.2 % noise.

Usage: .venv/bin/python benchmarks/bench_health_monitor.py [--seconds 600]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from rackpower_nodes.core.health.config import HealthConfig
from rackpower_nodes.core.health.monitor import HealthModel, HealthMonitor
from rackpower_nodes.core.health.stream import HealthStream
from rackpower_nodes.sim.faults.frames import health_frame
from rackpower_nodes.sim.rack_sim import generate

BATCHES_PER_S, SAMPLES = 20, 50          # 1 kHz in 20 batches a second
VOLTS = 230.0


def _run(seconds: int, model: HealthModel | None, data, rng) -> dict[str, np.ndarray]:
    names, kinds = data.names, data.kinds
    stream = HealthStream(names, kinds)
    monitor = HealthMonitor(names, kinds, model, HealthConfig())
    t0 = float(int(time.time()))
    push, pop, update = [], [], []
    volts = np.full(len(names), VOLTS)
    for s in range(seconds):
        row = data.power_w[(s * 10) % len(data.power_w):][:10]            # 10 Hz, 1 s
        watts = np.repeat(row.T, 100, axis=1)                             # (m, 1000)
        amps = watts / VOLTS * (1 + 0.002 * rng.standard_normal(watts.shape))
        began = time.perf_counter()
        for b in range(BATCHES_PER_S):
            stream.push_samples(t0 + s + b / BATCHES_PER_S, 1e-3, names,
                                amps[:, b * SAMPLES:(b + 1) * SAMPLES], volts)
        stream.push_telemetry(t0 + s, {h: (0.3, 1e6, 1e6, True) for h in data.hosts})
        push.append(time.perf_counter() - began)
        began = time.perf_counter()
        frame = stream.pop(t0 + s + 1.5)
        pop.append(time.perf_counter() - began)
        began = time.perf_counter()
        monitor.update(frame)
        update.append(time.perf_counter() - began)
    return {"push (20 batches + telemetry)": np.array(push), "pop": np.array(pop),
            "HealthMonitor.update": np.array(update)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=600)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    data = generate(max(args.seconds, 1800) / 3600, seed=1000)              # held-out seed
    model = HealthModel.fit(health_frame(generate(0.5, seed=100)))
    print(f"Command: .venv/bin/python benchmarks/bench_health_monitor.py --seconds "
          f"{args.seconds}\n")
    print(f"{len(data.names)} components, {args.seconds} simulated seconds, one per row\n")
    print("| model | step | mean ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, m in (("none (physical checks)", None), ("learned", model)):
        for step, ms in _run(args.seconds, m, data, rng).items():
            ms = ms * 1e3
            print(f"| {label} | {step} | {ms.mean():.2f} | {np.percentile(ms, 99):.2f} | "
                  f"{ms.max():.2f} |")


if __name__ == "__main__":
    main()
