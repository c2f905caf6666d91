"""What the health model reads and says: `HealthFrame`, `HealthVerdict`, `FlaggedInterval`.

Pure module. Every source (the live graph, the simulator's fast mode, recorded bags, the BSC
traces) meets the health model in one shape, :class:`HealthFrame`: per component, one row per
second, what the sensor board's channel showed over that second (mean, min, max, standard
deviation of its samples, W), what an *independent* meter says (a PDU outlet register or a
BMC reading, W; NaN where there is none), and the host's telemetry and workload knowledge.

The model's answer per component is a :class:`HealthVerdict`; a component judged faulty over
an interval is a :class:`FlaggedInterval`, which retraining keeps out of its windows.

Fault classes (:data:`FAULT_CLASSES`) are what the model may name as the suspected cause:
component faults (:data:`COMPONENT_FAULTS`), where the component really draws differently, and
sensor faults (:data:`SENSOR_FAULTS`), where only the measurement is wrong and the component is
fine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "COMPONENT_FAULTS", "FAULT_CLASSES", "FRAME_FIELDS", "HEALTH_STATES", "OPTIONAL_FIELDS",
    "SENSOR_FAULTS", "FlaggedInterval", "HealthFrame", "HealthFrameError", "HealthVerdict",
]

#: the component really draws differently
COMPONENT_FAULTS = ("psu_efficiency", "fan_wear", "disk_retries", "runaway_process",
                    "outlet_dropout")
#: only the measurement (the board's channel) is wrong
SENSOR_FAULTS = ("sensor_offset", "sensor_stuck", "sensor_gain")
FAULT_CLASSES = COMPONENT_FAULTS + SENSOR_FAULTS
#: ok: nothing seen; watch: evidence building up, not yet conclusive; fault: conclusive
HEALTH_STATES = ("ok", "watch", "fault")
#: (rows, components) arrays of a frame, in this order
FRAME_FIELDS = ("board_mean_w", "board_min_w", "board_max_w", "board_std_w", "ref_w", "util",
                "disk_bps", "net_bps", "app_rate", "job_running", "psu_in_w", "psu_out_w")
#: fields a frame may be built without (all NaN then): the PSUs' own meters, where no BMC
#: reports them
OPTIONAL_FIELDS = ("psu_in_w", "psu_out_w")


class HealthFrameError(ValueError):
    """A frame with inconsistent shapes, times or names; the message names the field."""


@dataclass
class HealthFrame:
    """Per-second summaries of a rack's components; row i covers ``[t_unix[i], t_unix[i]+1)``.

    All arrays are ``(rows, components)`` float (float32 is enough), NaN where unknown:

    - ``board_mean_w``, ``board_min_w``, ``board_max_w``, ``board_std_w``: the sensor board's
      channel over the second (power = current x the channel's voltage, W);
    - ``ref_w``: an independent meter's mean power over the second (PDU outlet or BMC, W);
      NaN where the component has none or it was not read that second;
    - ``util``: host CPU utilisation 0..1 (NaN for switches and unknown);
    - ``disk_bps``, ``net_bps``: host disk read+write and network rx+tx, bytes/s;
    - ``app_rate``: the host's served request rate, req/s (NaN where none is exported);
    - ``job_running``: 1.0 when the scheduler says a job runs on the host, 0.0 when it says
      none does, NaN when no scheduler speaks for the host;
    - ``psu_in_w``, ``psu_out_w``: the component's power supplies' own input and output
      power, summed over its PSUs, as their PMBus meters (READ_PIN, READ_POUT) report them
      through the BMC (Redfish ``PowerSupplies[].PowerInputWatts`` / ``PowerOutputWatts``),
      W; NaN where there is no such reading (optional: left out, all NaN).

    ``t_unix`` is strictly increasing whole or fractional seconds; rows need not be
    contiguous (a gap is a gap, not zeros).
    """

    t_unix: np.ndarray
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    board_mean_w: np.ndarray
    board_min_w: np.ndarray
    board_max_w: np.ndarray
    board_std_w: np.ndarray
    ref_w: np.ndarray
    util: np.ndarray
    disk_bps: np.ndarray
    net_bps: np.ndarray
    app_rate: np.ndarray
    job_running: np.ndarray
    psu_in_w: np.ndarray | None = None
    psu_out_w: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.t_unix = np.asarray(self.t_unix, dtype=np.float64)
        self.names, self.kinds = tuple(self.names), tuple(self.kinds)
        n, m = len(self.t_unix), len(self.names)
        for f in OPTIONAL_FIELDS:
            if getattr(self, f) is None:
                setattr(self, f, np.full((n, m), np.nan, dtype=np.float32))
        if len(self.kinds) != m:
            raise HealthFrameError(f"kinds: {len(self.kinds)} entries for {m} names")
        if len(set(self.names)) != m:
            raise HealthFrameError(f"names: duplicates in {list(self.names)}")
        if n > 1 and not np.all(np.diff(self.t_unix) > 0):
            raise HealthFrameError("t_unix: not strictly increasing")
        for f in FRAME_FIELDS:
            arr = np.asarray(getattr(self, f))
            if arr.shape != (n, m):
                raise HealthFrameError(f"{f}: shape {arr.shape}, expected {(n, m)}")
            setattr(self, f, arr)

    def __len__(self) -> int:
        return len(self.t_unix)

    def rows(self, start: int, stop: int) -> HealthFrame:
        """Rows ``start:stop`` as a frame of their own (views, not copies)."""
        return self.select(slice(start, stop))

    def select(self, index) -> HealthFrame:
        """The rows ``index`` picks (a slice: views; an index array: copies), as a frame."""
        return HealthFrame(self.t_unix[index], self.names, self.kinds,
                           *(getattr(self, f)[index] for f in FRAME_FIELDS))

    def column(self, name: str) -> int:
        """Index of component ``name``."""
        if name not in self.names:
            raise KeyError(f"unknown component {name!r} (known: {list(self.names)})")
        return self.names.index(name)

    @classmethod
    def concat(cls, frames: list[HealthFrame]) -> HealthFrame:
        """Frames of the same components one after the other (times must keep rising)."""
        if not frames:
            raise HealthFrameError("concat: no frames")
        first = frames[0]
        for f in frames[1:]:
            if f.names != first.names:
                raise HealthFrameError(f"concat: names {f.names} differ from {first.names}")
        return cls(np.concatenate([f.t_unix for f in frames]), first.names, first.kinds,
                   *(np.concatenate([getattr(f, k) for f in frames]) for k in FRAME_FIELDS))


@dataclass(frozen=True)
class HealthVerdict:
    """The health model's view of one component now.

    ``score`` is the detector's evidence against "healthy" as a fraction of its fault
    threshold (>= 1.0: fault); ``cause`` one of :data:`FAULT_CLASSES` (``""`` while ok);
    ``since_unix`` when the evidence started building (the change point's estimate, NaN while
    ok); ``evidence`` named figures behind the decision (e.g. the residual's mean shift in W,
    the board-vs-reference gap in W), for an operator to check.
    """

    component: str
    state: str
    score: float
    cause: str = ""
    since_unix: float = math.nan
    evidence: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in HEALTH_STATES:
            raise ValueError(f"state: {self.state!r}, expected one of {HEALTH_STATES}")
        if self.cause and self.cause not in FAULT_CLASSES:
            raise ValueError(f"cause: {self.cause!r}, expected one of {FAULT_CLASSES}")

    @property
    def sensor_fault(self) -> bool:
        """The measurement, not the component, is at fault."""
        return self.cause in SENSOR_FAULTS


@dataclass(frozen=True)
class FlaggedInterval:
    """A component's data judged faulty over ``[start_unix, end_unix)`` (end: inf = still)."""

    component: str
    start_unix: float
    end_unix: float
    cause: str

    def __post_init__(self) -> None:
        if not self.end_unix >= self.start_unix:
            raise ValueError(f"{self.component}: flagged interval ends ({self.end_unix}) "
                             f"before it starts ({self.start_unix})")

    def as_dict(self) -> dict:
        return {"component": self.component, "start_unix": self.start_unix,
                "end_unix": None if math.isinf(self.end_unix) else self.end_unix,
                "cause": self.cause}

    @classmethod
    def from_dict(cls, d: dict) -> FlaggedInterval:
        end = d.get("end_unix")
        return cls(str(d["component"]), float(d["start_unix"]),
                   math.inf if end is None else float(end), str(d.get("cause", "")))
