"""What the server power-cap tests share: the limits a simulated BMC holds for the rack's
components."""
from __future__ import annotations

import numpy as np
from helpers.rack import NAMES

from rackpower_nodes.sim.bmc import SimBmcServer

__all__ = ["_limits"]


def _limits(server: SimBmcServer) -> np.ndarray:
    return np.array([np.inf if server.limit_w(n) is None else server.limit_w(n)
                     for n in NAMES])
