"""One injected fault: `FaultSpec` (what, where, when, how it grows, how big).

``magnitude`` means, per kind (all at full growth):

- ``psu_efficiency``: fractional extra input power at the same load (0.06: +6 %);
- ``fan_wear``: extra draw in W (the ripple's amplitude grows with it);
- ``disk_retries``: retry bursts per minute (storage hosts only);
- ``runaway_process``: extra CPU utilisation of the host, 0..1 (the power follows it);
- ``outlet_dropout``: dropouts per hour;
- ``sensor_offset``: offset of the board's reading in W;
- ``sensor_gain``: fractional gain error of the board's reading (+0.08: reads 8 % high);
- ``sensor_stuck``: unused (the channel holds the value it read at onset).

Times are simulated seconds after the run's start. ``failure_s`` is when the fault would trip
or stop the component (inf: never), so a detection's lead time can be reported.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rackpower_nodes.core.health import FAULT_CLASSES, SENSOR_FAULTS

GROWTHS = ("linear", "step", "exponential")


class FaultSpecError(ValueError):
    """A fault that cannot be injected; the message names the field."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    component: str
    onset_s: float
    growth_s: float
    magnitude: float
    failure_s: float = math.inf
    growth: str = "linear"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_CLASSES:
            raise FaultSpecError(f"kind: {self.kind!r}, expected one of {FAULT_CLASSES}")
        if self.growth not in GROWTHS:
            raise FaultSpecError(f"{self.kind} on {self.component}: growth {self.growth!r}, "
                                 f"expected one of {GROWTHS}")
        if not (self.onset_s >= 0 and self.growth_s >= 0 and math.isfinite(self.magnitude)):
            raise FaultSpecError(f"{self.kind} on {self.component}: onset_s, growth_s must be "
                                 f">= 0 and magnitude finite (got {self.onset_s}, "
                                 f"{self.growth_s}, {self.magnitude})")
        if not self.failure_s >= self.onset_s:
            raise FaultSpecError(f"{self.kind} on {self.component}: failure_s "
                                 f"{self.failure_s} before onset_s {self.onset_s}")

    @property
    def is_sensor(self) -> bool:
        return self.kind in SENSOR_FAULTS

    def level(self, t_s: np.ndarray) -> np.ndarray:
        """Growth 0..1 at simulated times ``t_s``: 0 before onset, 1 from onset + growth_s."""
        t = np.asarray(t_s, dtype=np.float64) - self.onset_s
        if self.growth == "step" or self.growth_s == 0:
            return (t >= 0).astype(np.float64)
        x = np.clip(t / self.growth_s, 0.0, 1.0)
        if self.growth == "exponential":       # slow start, fast end (wear-out)
            x = np.expm1(4.0 * x) / math.expm1(4.0)
        return np.where(t >= 0, x, 0.0)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["failure_s"] = None if math.isinf(self.failure_s) else self.failure_s
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FaultSpec:
        d = dict(d)
        d["failure_s"] = math.inf if d.get("failure_s") is None else float(d["failure_s"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise FaultSpecError(f"fault {d}: {exc}") from None
