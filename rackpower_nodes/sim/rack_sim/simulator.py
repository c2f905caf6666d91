"""The rack simulator in (simulated) real time: `RackSimulator` and the `RackState` it returns.

A live driver (the sensor-board emulator, the PDUs, the node exporters) asks for the rack at
any time; samples are generated ahead by the engine
(:mod:`rackpower_nodes.sim.rack_sim.engine`) and a bounded history is kept. Powers in W,
currents in A, times in s after the configured start.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.sim.faults.effects import check_fault, sensor_reading
from rackpower_nodes.sim.faults.spec import FaultSpec
from rackpower_nodes.sim.rack_sim.config import RackConfig, _check_rate, _check_seed, load_config
from rackpower_nodes.sim.rack_sim.data import HostState, SimData
from rackpower_nodes.sim.rack_sim.engine import _Engine, generate
from rackpower_nodes.sim.workload import TELEMETRY_FIELDS

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RackState:
    """The rack at one instant: per-component power (W), utilisation (0..1), current (A)."""

    t_s: float
    t_unix: float
    names: tuple[str, ...]
    power_w: np.ndarray
    util: np.ndarray
    current_a: np.ndarray

    @property
    def total_w(self) -> float:
        return float(self.power_w.sum())


class RackSimulator:
    """The rack in (simulated) real time; thread-safe.

    Samples are generated ahead in blocks of ``block_s`` s and the last ``history_s`` s are
    kept. Values between samples are interpolated linearly; host telemetry holds for 1 s.
    A live driver calls :meth:`step` with the wall-clock time that passed.

    ``faults`` (and :meth:`inject`) are simulated faults: component faults change the rack
    (:meth:`power_at`, :meth:`state_at`, :meth:`host_state`: what the PDU and the BMC see),
    sensor faults only what the board reads (:meth:`current_source`, :meth:`sensor_view`).
    """

    def __init__(self, config: str | Path | Mapping | RackConfig | None = None,
                 seed: int | None = None, rate_hz: int | None = None,
                 history_s: float = 600.0, block_s: int = 10,
                 faults: Sequence[FaultSpec] = ()):
        self.config = load_config(config)
        self.seed = _check_seed(self.config.seed if seed is None else seed)
        self.rate_hz = _check_rate(self.config.rate_hz if rate_hz is None else rate_hz)
        self._engine = _Engine(self.config, self.seed, self.rate_hz, faults)
        self._stuck: dict[int, float] = {}      # sensor_stuck: fault's position -> W read
        self._history_s, self._block_s = float(history_s), int(block_s)
        self._lock = threading.Lock()
        m, h = len(self.config.components), len(self.config.hosts)
        self._t0_index = 0                      # sample index of the first cached row
        self._power, self._load = np.zeros((0, m)), np.zeros((0, m))
        self._tele = np.zeros((0, len(TELEMETRY_FIELDS), h))
        self._volts = self.config.nominal_v * self.config.power_factor
        self.now_s = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.names

    def index(self, name: str) -> int:
        """Component index of ``name``."""
        if name not in self.names:
            raise KeyError(f"unknown component {name!r} (known: {list(self.names)})")
        return self.names.index(name)

    def generate(self, hours: float) -> SimData:
        """Fast mode with this simulator's config, seed, rate and faults (live state
        untouched)."""
        return generate(hours, self.seed, self.rate_hz, self.config, faults=self.faults)

    @property
    def faults(self) -> tuple[FaultSpec, ...]:
        """The faults given and injected so far, as they apply (ground truth)."""
        with self._lock:
            return tuple(self._engine.faults.specs)

    def inject(self, spec: FaultSpec) -> FaultSpec:
        """Inject ``spec`` (onset in this simulator's time) and return it as injected.

        A sensor fault applies from its onset. A component fault changes samples not generated
        yet: when its onset falls in those already generated (at most ``block_s`` s ahead of
        the last request), its onset (and failure time) move to the first new sample, and the
        returned spec says so. FaultSpecError names what is wrong with a fault the rack cannot
        have.
        """
        with self._lock:
            check_fault(spec, self.names, [c.kind for c in self.config.components])
            end_s = (self._t0_index + len(self._power)) / self.rate_hz
            if not spec.is_sensor and spec.onset_s < end_s:
                shift = end_s - spec.onset_s
                spec = dataclasses.replace(spec, onset_s=end_s,
                                           failure_s=spec.failure_s + shift)
            self._engine.add_fault(spec)
        _log.info("fault injected: %s", spec)
        return spec

    def step(self, dt_s: float) -> RackState:
        """Advance the clock by ``dt_s`` s and return the state there."""
        if not dt_s >= 0.0:
            raise ValueError(f"dt_s: {dt_s!r}, expected >= 0 s")
        self.now_s += dt_s
        return self.state_at(self.now_s)

    def state_at(self, t_s: float) -> RackState:
        """The rack at ``t_s`` s after the configured start."""
        power, load = self._interp(np.array([float(t_s)]))
        return RackState(float(t_s), self.config.start_unix + float(t_s), self.names,
                         power[0], load[0], power[0] / self._volts)

    def power_at(self, t_s: np.ndarray) -> np.ndarray:
        """(n, components) wall power (W) at times ``t_s`` (s)."""
        return self._interp(np.asarray(t_s, dtype=np.float64))[0]

    def current_at(self, t_s: np.ndarray) -> np.ndarray:
        """(n, components) current (A) = power / (nominal_v * power_factor)."""
        return self.power_at(t_s) / self._volts

    def current_source(self, channel_map: Sequence[int | None], channels: int,
                       t0_s: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
        """A sensor-board source: ``source(t_s)`` -> (n, channels) A at simulator time
        ``t0_s + t_s``. ``channel_map[k]`` is the component index on board channel k
        (None or -1: 0 A); channels beyond the map read 0 A."""
        if len(channel_map) > channels:
            raise ValueError(f"channel_map: {len(channel_map)} entries for {channels} channels")
        cols = np.array([-1 if c is None else int(c) for c in channel_map], dtype=np.int64)
        m = len(self.names)
        bad = [int(c) for c in cols if not -1 <= c < m]
        if bad:
            raise ValueError(f"channel_map: component indices {bad} outside 0..{m - 1}")
        board = np.flatnonzero(cols >= 0)

        def source(t_s: np.ndarray) -> np.ndarray:
            t = t0_s + np.asarray(t_s, dtype=np.float64)
            out = np.zeros((t.size, channels))
            if board.size:
                power = self.power_at(t)[:, cols[board]]
                out[:, board] = self.sensor_view(t, power, cols[board]) / self._volts
            return out

        return source

    def sensor_view(self, t_s: np.ndarray, power_w: np.ndarray,
                    comps: Sequence[int]) -> np.ndarray:
        """What board channels read (W): ``power_w`` (n, len(comps)), the power at times
        ``t_s`` (s) of components ``comps``, under the sensor faults; ``power_w`` itself when
        none applies. A stuck channel holds what it read at the fault's onset."""
        with self._lock:
            specs = [s for s in self._engine.faults.specs if s.is_sensor]
        return self._read(np.asarray(t_s, dtype=np.float64), power_w, list(comps), specs)

    def _read(self, t: np.ndarray, power_w: np.ndarray, comps: list[int],
              specs: list[FaultSpec]) -> np.ndarray:
        out = power_w
        for k, spec in enumerate(specs):
            c = self.index(spec.component)
            cols = [j for j, comp in enumerate(comps) if comp == c]
            if not cols or not t.size or t.max() < spec.onset_s:
                continue
            stuck = self._stuck_at(k, spec, specs[:k]) if spec.kind == "sensor_stuck" else None
            if out is power_w:
                out = np.array(power_w, dtype=np.float64)
            for j in cols:
                out[:, j] = sensor_reading(spec, t, out[:, j], stuck)
        return out

    def _stuck_at(self, k: int, spec: FaultSpec, before: list[FaultSpec]) -> float:
        """What the stuck channel read at its onset (under the sensor faults before it)."""
        if k not in self._stuck:
            c = self.index(spec.component)
            at = np.array([spec.onset_s])
            self._stuck[k] = float(self._read(at, self.power_at(at)[:, [c]], [c], before)[0, 0])
        return self._stuck[k]

    def host_state(self, host: str, t_s: float) -> HostState:
        """Telemetry of ``host`` for the second containing ``t_s`` (s)."""
        if host not in self.config.hosts:
            raise KeyError(f"{host!r} is not a server or storage host "
                           f"(hosts: {list(self.config.hosts)})")
        second = math.floor(t_s)
        with self._lock:
            self._extend_to(second + 1.0)
            row = second - self._t0_index // self.rate_hz
            self._check_row(row, t_s)
            values = self._tele[row, :, self.config.hosts.index(host)]
        spec = self.config.components[self.index(host)].model.host
        return HostState(host, float(second), *map(float, values[:2]), spec.mem_total_bytes,
                         *map(float, values[2:]), spec.n_cpus)

    def _interp(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if t.size:
                self._extend_to(float(t.max()) + 1.0 / self.rate_hz)
            pos = t * self.rate_hz - self._t0_index
            if t.size and pos.min() < 0:
                self._check_row(-1, float(t.min()))
            i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(self._power) - 2)
            w = (pos - i0)[:, None]
            return tuple(arr[i0] * (1.0 - w) + arr[i0 + 1] * w
                         for arr in (self._power, self._load))

    def _check_row(self, row: int, t_s: float) -> None:
        if row < 0:
            start = self._t0_index / self.rate_hz
            raise ValueError(f"t_s={t_s}: before the kept history, which starts at {start} s "
                             f"(history_s={self._history_s})")

    def _extend_to(self, t_end: float) -> None:
        """Generate blocks until samples reach past ``t_end`` s, then drop old history."""
        while (end_s := (self._t0_index + len(self._power)) / self.rate_hz) <= t_end:
            # Catch up on a far-ahead request in larger blocks (same samples, fewer calls).
            blk = self._engine.block(max(self._block_s, min(600, math.ceil(t_end - end_s))))
            self._power = np.concatenate([self._power, blk.power_w])
            self._load = np.concatenate([self._load, blk.util])
            rows = np.stack([blk.telemetry[f] for f in TELEMETRY_FIELDS], axis=1)
            self._tele = np.concatenate([self._tele, rows])
        first_s = int(t_end - max(self._history_s, 2 * self._block_s))
        drop_s = first_s - self._t0_index // self.rate_hz
        if drop_s > 0:
            self._tele = self._tele[drop_s:]
            self._power = self._power[drop_s * self.rate_hz:]
            self._load = self._load[drop_s * self.rate_hz:]
            self._t0_index += drop_s * self.rate_hz
