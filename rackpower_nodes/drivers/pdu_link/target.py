"""The PDU link's targets and reports: one actuator as the link drives it, a read-back's result.

`PduTarget` holds one target's client, outlets, settings and per-target bookkeeping (what it
reported, what it acknowledged, its worst case for the budget, its counters); `Confirmation`
and `LinkStatus` are what the link reports. Values in W, times in s.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rackpower_nodes.drivers.pdu import PduClient


def float32_floor(watts: np.ndarray) -> np.ndarray:
    """`watts` as float32 values no larger than the float64 ones (registers and messages are
    float32: rounding up could carry a sum over the budget)."""
    w = np.asarray(watts, dtype=np.float64)
    f = w.astype(np.float32)
    f = np.where(f.astype(np.float64) > w, np.nextafter(f, np.float32(-np.inf)), f)
    return np.maximum(f, 0).astype(np.float64)


@dataclass
class PduTarget:
    """One actuator (a PDU, or a server's BMC seen as a one-outlet device): its client, the
    outlets the link drives and those outlets' component indices."""

    name: str
    client: PduClient
    outlets: np.ndarray            # (k,) outlet numbers, 1-based
    index: np.ndarray              # (k,) component index of each outlet
    min_change_w: float = 0.0      # dead band: smaller changes are not written, W
    resolution_w: float = 0.0      # values written rounded down to a multiple of this, W
    heartbeat_s: float | None = None   # longest silence before a read (None: the link's)
    kind: str = "pdu"              # "pdu" or "bmc", for diagnostics
    verify_s: float | None = None  # read-back period, s (None: the link's)
    connected_once: bool = False
    last_attempt: float = -1e9
    failed_attempts: int = 0       # connection attempts failed in a row
    last_error: str = ""
    writes: int = 0
    failures: int = 0
    reconnects: int = 0
    last_ok: float | None = None   # monotonic time of the last successful request
    readbacks: int = 0             # successful read-backs of the allocations
    mismatches: int = 0            # values found other than the one acknowledged
    corrections: int = 0           # of those, rewritten and acknowledged
    reboots: int = 0               # restarts seen in the boot counter or uptime
    last_mismatch: str = ""        # "<device> outlet k: expected X W, found Y W"
    last_mismatch_t: float | None = None   # monotonic time of it
    last_reboot: str = ""
    held: np.ndarray = field(default=None, repr=False)      # (k,) reported, W (NaN unknown)
    expected: np.ndarray = field(default=None, repr=False)  # (k,) last acknowledged, W
    fixing: np.ndarray = field(default=None, repr=False)    # (k,) mismatch not yet corrected
    in_force: np.ndarray = field(default=None, repr=False)  # (k,) worst case for the budget
    boot: tuple[str, float] | None = None                   # last boot counter / uptime read
    next_verify: float = 0.0

    def rounded(self, values_w: np.ndarray) -> np.ndarray:
        """`values_w` (W) as this target takes them: rounded down to a multiple of its
        resolution (unchanged without one); `core.actuation.round_down` for one scalar
        resolution, without its broadcasting (the write path calls it per target, per
        step)."""
        r = self.resolution_w
        return np.floor(values_w / r) * r if r > 0 else values_w

    def __post_init__(self) -> None:
        k = len(self.outlets)
        self.held = np.full(k, np.nan)
        self.expected = np.full(k, np.nan)
        self.fixing = np.zeros(k, bool)
        self.in_force = np.full(k, np.inf)

    @property
    def writable(self) -> bool:
        return bool(self.client.can_write_allocations)

    @property
    def label(self) -> str:
        return f"{self.kind.upper()} {self.name}"


@dataclass
class LinkStatus:
    ok: bool
    reason: str
    pdus: list[dict] = field(default_factory=list)


@dataclass
class Confirmation:
    """What a read-back of every target found against the allocation meant to be held."""

    ok: bool                       # every target read back and holds what was meant
    held_w: np.ndarray             # (n,) per component as `PduLink.held_w`, W
    driven: np.ndarray             # (n,) components some target enforces
    differences: list[str]         # one line per outlet that differs or could not be read

    @property
    def held_total_w(self) -> float:
        """What the devices hold in all, W (NaN while any enforced component is unknown)."""
        return float(np.sum(self.held_w[self.driven]))
