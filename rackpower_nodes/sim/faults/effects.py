"""What each fault does to the simulated rack, block by block (:class:`FaultSet`).

The engine asks a :class:`FaultSet` at three points of every block of one component:
:meth:`~FaultSet.util` before power is computed (a runaway process adds CPU load, so the
power model, its lag and the ``cpu_util`` telemetry all follow), :meth:`~FaultSet.power` on
the wall power (W) the component really draws (PSU efficiency, fan wear, disk retries, outlet
dropouts) and :meth:`~FaultSet.telemetry` on its per-second host telemetry (disk throughput
lost to retries, CPU utilisation of the runaway). Sensor faults never touch the rack: only
what the board's channel reads (:func:`sensor_reading`).

Every fault draws from its own generator, ``SeedSequence([seed, 2_000_003, i, spec.seed])``
for the i-th fault, one draw row per sample whether the fault is active or not, so the
components' generators are untouched and the result does not depend on how time is cut into
blocks. Physical models and sources: docs/rack-simulator.md, "Faults".
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.sim.faults.spec import FaultSpec, FaultSpecError
from rackpower_nodes.sim.rack_model.dynamics import PulseTrain

__all__ = ["ALLOWED_KINDS", "FAULT_SEED_BRANCH", "FaultSet", "board_view", "check_fault",
           "sensor_reading"]

#: seed branch of the faults' generators (the scheduler uses 1_000_003)
FAULT_SEED_BRANCH = 2_000_003
#: kinds of component each fault can hit
ALLOWED_KINDS = {"psu_efficiency": ("server", "storage", "switch"),
                 "fan_wear": ("server", "storage", "switch"),
                 "disk_retries": ("storage",),
                 "runaway_process": ("server", "storage"),
                 "outlet_dropout": ("server", "storage", "switch"),
                 "sensor_offset": ("server", "storage", "switch"),
                 "sensor_gain": ("server", "storage", "switch"),
                 "sensor_stuck": ("server", "storage", "switch")}
FAN_PERIOD_S = (15.0, 60.0)         # speed hunting of a worn fan's control loop
FAN_RIPPLE = (0.3, 0.6)             # ripple amplitude as a fraction of the extra draw
DISK_BURST_S = (0.3, 1.5)           # one retry burst (re-seeks and re-reads)
DISK_BURST_W = (3.0, 9.0)           # extra draw of a burst, W
DISK_SLOWDOWN_PER_BURST_S = 1.0     # throughput lost: share of time spent retrying
DROPOUT_S = (0.2, 3.0)              # a relay chatter or PSU dropout
DROPOUT_RESIDUAL_W = 0.5            # what the cord still draws while out (EMI filter), W


def check_fault(spec: FaultSpec, names: Sequence[str], kinds: Sequence[str]) -> int:
    """The component index ``spec`` hits; FaultSpecError naming the field if it cannot."""
    if spec.component not in names:
        raise FaultSpecError(f"component: {spec.component!r} ({spec.kind}) is not in the rack "
                             f"(known: {list(names)})")
    i = list(names).index(spec.component)
    if kinds[i] not in ALLOWED_KINDS[spec.kind]:
        raise FaultSpecError(f"kind: {spec.kind} cannot hit {spec.component!r}, a {kinds[i]} "
                             f"(only {', '.join(ALLOWED_KINDS[spec.kind])})")
    if spec.kind in ("psu_efficiency", "fan_wear", "disk_retries", "runaway_process",
                     "outlet_dropout") and spec.magnitude < 0:
        raise FaultSpecError(f"magnitude: {spec.magnitude} for {spec.kind} on "
                             f"{spec.component}, expected >= 0")
    if spec.kind == "sensor_gain" and spec.magnitude <= -1:
        raise FaultSpecError(f"magnitude: {spec.magnitude} for sensor_gain on "
                             f"{spec.component}, expected > -1 (a gain above 0)")
    return i


class _Active:
    """One component fault's generator and carried state."""

    def __init__(self, spec: FaultSpec, seq: np.random.SeedSequence, dt_s: float):
        self.spec, self.dt = spec, dt_s
        self.rng = np.random.default_rng(seq)
        lo, hi = FAN_PERIOD_S
        self.period_s = lo + (hi - lo) * float(self.rng.random())
        self.ripple = FAN_RIPPLE[0] + (FAN_RIPPLE[1] - FAN_RIPPLE[0]) * float(self.rng.random())
        self.phase = 2 * math.pi * float(self.rng.random())
        self.pulses = PulseTrain()

    def bursts(self, t_s: np.ndarray, per_s: np.ndarray, length_s: tuple[float, float],
               height: tuple[float, float]) -> np.ndarray:
        """Poisson pulses at ``per_s`` (per sample) of uniform length (s) and height."""
        draws = self.rng.random((len(t_s), 3))          # hit?, length, height
        starts = np.flatnonzero(draws[:, 0] < per_s * self.dt)
        lengths = np.rint((length_s[0] + (length_s[1] - length_s[0]) * draws[starts, 1])
                          / self.dt)
        heights = height[0] + (height[1] - height[0]) * draws[starts, 2]
        return self.pulses.block(len(t_s), starts, lengths, heights)


class FaultSet:
    """The component faults of one rack run, applied block by block; not thread-safe (the
    live simulator calls it under its lock)."""

    def __init__(self, names: Sequence[str], kinds: Sequence[str], seed: int, dt_s: float):
        self.names, self.kinds = tuple(names), tuple(kinds)
        self.seed, self.dt = int(seed), float(dt_s)
        self.specs: list[FaultSpec] = []
        self._by_comp: dict[int, list[_Active]] = {}

    def add(self, spec: FaultSpec) -> None:
        """Add a fault (checked against the rack); sensor faults are only recorded."""
        i = check_fault(spec, self.names, self.kinds)
        seq = np.random.SeedSequence([self.seed, FAULT_SEED_BRANCH, len(self.specs),
                                      int(spec.seed)])
        self.specs.append(spec)
        if not spec.is_sensor:
            self._by_comp.setdefault(i, []).append(_Active(spec, seq, self.dt))

    def __bool__(self) -> bool:
        return bool(self._by_comp)

    def util(self, comp: int, t_s: np.ndarray, util: np.ndarray) -> np.ndarray | None:
        """Add a runaway's load to ``util`` in place (0..1); returns the added load per
        sample, or None when there is none."""
        extra = None
        for a in self._by_comp.get(comp, ()):
            if a.spec.kind == "runaway_process":
                add = a.spec.magnitude * a.spec.level(t_s)
                extra = add if extra is None else extra + add
        if extra is None:
            return None
        before = util.copy()
        np.clip(util + extra, 0.0, 1.0, out=util)
        return util - before

    def power(self, comp: int, t_s: np.ndarray, power: np.ndarray) -> None:
        """Apply the component's faults to its wall power ``power`` (W) in place."""
        dropout = None
        for a in self._by_comp.get(comp, ()):
            kind, m, level = a.spec.kind, a.spec.magnitude, None
            if kind != "runaway_process":
                level = a.spec.level(t_s)
            if kind == "psu_efficiency":       # input = output / efficiency
                power *= 1.0 + m * level
            elif kind == "fan_wear":           # worn bearing: more torque, hunting speed
                wave = np.sin(2 * math.pi * t_s / a.period_s + a.phase)
                power += m * level * (1.0 + a.ripple * wave)
            elif kind == "disk_retries":
                power += a.bursts(t_s, m * level / 60.0, DISK_BURST_S, DISK_BURST_W)
            elif kind == "outlet_dropout":
                out = a.bursts(t_s, m * level / 3600.0, DROPOUT_S, (1.0, 1.0)) > 0.5
                dropout = out if dropout is None else dropout | out
        if dropout is not None:
            power[dropout] = np.minimum(power[dropout], DROPOUT_RESIDUAL_W)

    def telemetry(self, comp: int, t_1hz: np.ndarray, values: dict[str, np.ndarray],
                  util_added: np.ndarray | None, rate: int) -> None:
        """Per-second host telemetry under the component's faults, in place."""
        if util_added is not None:
            added = util_added.reshape(-1, rate).mean(axis=1)
            values["cpu_util"] = np.clip(values["cpu_util"] + added, 0.0, 1.0)
        for a in self._by_comp.get(comp, ()):
            if a.spec.kind == "disk_retries":
                busy = a.spec.magnitude * a.spec.level(t_1hz) / 60.0 * np.mean(DISK_BURST_S)
                keep = 1.0 - np.clip(busy * DISK_SLOWDOWN_PER_BURST_S, 0.0, 0.5)
                for f in ("disk_read_bytes_per_s", "disk_write_bytes_per_s"):
                    values[f] = values[f] * keep


def sensor_reading(spec: FaultSpec, t_s: np.ndarray, read_w: np.ndarray,
                   stuck_w: float | None = None) -> np.ndarray:
    """What a board channel reads (W) under sensor fault ``spec``, from ``read_w`` (what it
    would read without it) at times ``t_s``. ``sensor_stuck`` holds ``stuck_w`` (the value
    read at onset) from the onset on."""
    level = spec.level(t_s)
    if spec.kind == "sensor_offset":
        return read_w + spec.magnitude * level
    if spec.kind == "sensor_gain":
        return read_w * (1.0 + spec.magnitude * level)
    if spec.kind == "sensor_stuck":
        if stuck_w is None:
            raise ValueError(f"sensor_stuck on {spec.component}: no value read at onset")
        return np.where(np.asarray(t_s) >= spec.onset_s, stuck_w, read_w)
    raise ValueError(f"{spec.kind} is not a sensor fault")


def board_view(specs: Sequence[FaultSpec], names: Sequence[str], t_s: np.ndarray,
               power_w: np.ndarray) -> np.ndarray:
    """(samples, components) what the board's channels read given the true ``power_w`` (W)
    sampled at ``t_s`` (s, increasing from the run's start), under the sensor faults among
    ``specs`` in order; a copy (``power_w`` itself when there are none)."""
    sensor = [s for s in specs if s.is_sensor]
    if not sensor:
        return power_w
    out = np.array(power_w, dtype=np.float64)
    for spec in sensor:
        col = list(names).index(spec.component)
        stuck = None
        if spec.kind == "sensor_stuck":
            k = int(np.searchsorted(t_s, spec.onset_s))
            if k >= len(t_s):
                continue
            stuck = float(out[k, col])
        out[:, col] = sensor_reading(spec, t_s, out[:, col], stuck)
    return out
