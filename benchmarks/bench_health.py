"""Predictive maintenance (issue 14): ``rackpower-health-eval`` at the sizes of RESULTS.md.

Per preset (office, ai, mixed): the health model learned on one fault-free training day
(seed 100), then ``--days`` held-out days (seeds 1000+) with 3 injected faults each (the
fault classes in turn, onsets 1-8 h), ``--clean-weeks`` fault-free held-out weeks (7 days
each, seeds 6000+), and the BSC traces (each server learned on its first workload, monitored
over the others). Prints the command and the markdown tables; ``--out`` keeps them with the
JSON. Extra arguments go to ``rackpower-health-eval`` as they are (they override these).

Usage (RESULTS.md runs it as two commands of under 15 min each on a 2-core machine):
    nice -n 10 .venv/bin/python benchmarks/bench_health.py --days 8 --clean-weeks 0 \
        --out /tmp/health-faults
    nice -n 10 .venv/bin/python benchmarks/bench_health.py --days 0 --clean-weeks 1 \
        --no-bsc --out /tmp/health-clean
    (options: [--days 8] [--clean-weeks 1] [--no-bsc] [--out DIR] [EXTRA health-eval ARGS])
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.tools.health_eval import main as health_eval_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=8,
                   help="held-out fault days per preset (8: each class 9 times)")
    p.add_argument("--clean-weeks", type=int, default=1, help="fault-free weeks per preset")
    p.add_argument("--bsc", type=Path, default=Path("../shared/data/bsc-power"))
    p.add_argument("--no-bsc", action="store_true", help="leave the BSC traces out")
    p.add_argument("--out", type=Path, default=Path("/tmp/health-eval"))
    a, extra = p.parse_known_args(argv)
    extra = [x for x in extra if x != "--"]
    args = ["--presets", "office,ai,mixed", "--days", str(a.days), "--faults-per-day", "3",
            "--clean-weeks", str(a.clean_weeks), *([] if a.no_bsc else ["--bsc", str(a.bsc)]),
            "--out", str(a.out), "-v", *extra]
    print("```sh\n" + shlex.join(["nice", "-n", "10", ".venv/bin/python",
                                  "benchmarks/bench_health.py",
                                  *(sys.argv[1:] if argv is None else argv)])
          + "\n# runs: " + shlex.join(["rackpower-health-eval", *args]) + "\n```\n",
          flush=True)
    return health_eval_main(args)


if __name__ == "__main__":
    sys.exit(main())
