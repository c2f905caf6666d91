"""One simulated PDU in a process of its own, nothing else: a Modbus TCP server on loopback
with the `rackpower_sim` register map, until SIGINT or SIGTERM.

    python -m rackpower_nodes.sim.pdu_process --port 5020 [--outlet-rating-w 2300]
        [--breaker-w 4600] [--defaults-w 2300]

For tests and demos of many racks (a room) where each rack's PDU must live apart from the
others and from the test, without a whole simulated rack (`rackpower-sim live`). It prints
`listening on tcp://127.0.0.1:<port>` once it answers. The metering registers stay at 0 W (no
load is simulated); the allocation registers hold what the actuator writes.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.sim.pdu.model import PduModel
from rackpower_nodes.sim.pdu.server import SimPduServer

OUTLETS = 24          # the rackpower_sim map


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rackpower_nodes.sim.pdu_process",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    p.add_argument("--outlet-rating-w", type=float, default=2300.0,
                   help="every outlet's rating, W (default 2300)")
    p.add_argument("--breaker-w", type=float, default=4600.0,
                   help="the PDU breaker's rating, W (default 4600)")
    p.add_argument("--defaults-w", type=float, default=None,
                   help="power-on allocation of every outlet, W (default: its rating)")
    p.add_argument("--unit-id", type=int, default=1, help="Modbus unit id (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        model = PduModel(np.full(OUTLETS, args.outlet_rating_w), args.breaker_w)
        server = SimPduServer("rackpower_sim", model, port=args.port, unit_id=args.unit_id,
                              defaults_w=args.defaults_w)
        if args.defaults_w is not None:
            model.set_allocations(np.arange(OUTLETS), np.full(OUTLETS, args.defaults_w))
        server.start()
    except (OSError, ValueError) as exc:
        print(f"pdu_process: {exc}", file=sys.stderr)
        return 2
    print(f"listening on {server.url}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
