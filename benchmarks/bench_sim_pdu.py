"""Cost of the simulated PDU's model, per 10 Hz step of 48 outlets.

    .venv/bin/python benchmarks/bench_sim_pdu.py [--calls 100000]

`PduModel.apply` is called once per step by the live simulator and by `rackpower-evaluate`
(864,000 times for a simulated day); `apply_block` serves T steps with the allocations held.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from rackpower_nodes.sim.pdu import PduModel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args(argv)
    model = PduModel(np.full(48, 2300.0), 4600.0)
    demand = np.full(48, 60.0)
    began = time.perf_counter()
    for _ in range(args.calls):
        model.apply(demand, 0.1)
    per_call = (time.perf_counter() - began) / args.calls
    block = np.full((args.calls, 48), 60.0)
    model = PduModel(np.full(48, 2300.0), 4600.0)
    began = time.perf_counter()
    model.apply_block(block, 0.1)
    per_step = (time.perf_counter() - began) / args.calls
    print(f"command: python benchmarks/bench_sim_pdu.py --calls {args.calls}")
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| what | us per step | a simulated day at 10 Hz, s |")
    print("|---|---|---|")
    for name, t in (("apply", per_call), ("apply_block", per_step)):
        print(f"| {name} | {t * 1e6:.2f} | {t * 864_000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
