"""The rack simulator's engine: the rack generated block by block, and fast mode (`generate`).

Time advances in blocks of whole seconds; every component draws from generators seeded by
``SeedSequence([seed, component index])`` and filter state is carried from block to block, so
a seed always gives the same samples, whether :func:`generate` makes days at once or the live
:class:`~rackpower_nodes.sim.rack_sim.simulator.RackSimulator` asks for seconds at a time.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.sim.faults.effects import FaultSet, check_fault
from rackpower_nodes.sim.faults.spec import FaultSpec, FaultSpecError
from rackpower_nodes.sim.rack_model import PowerStream, SimConfigError
from rackpower_nodes.sim.rack_sim.config import (
    ComponentSpec,
    RackConfig,
    _check_rate,
    _check_seed,
    _jsonable,
    load_config,
    preset_config,
)
from rackpower_nodes.sim.rack_sim.data import APP_RATE_FIELD, SimData
from rackpower_nodes.sim.scheduler import BatchScheduler
from rackpower_nodes.sim.scheduler.activity import ScheduledHost
from rackpower_nodes.sim.workload import (
    GPU_HOST_TELEMETRY,
    STORAGE_TELEMETRY,
    TELEMETRY_FIELDS,
    TelemetryShape,
    TelemetryStream,
    WorkloadStream,
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Block:
    power_w: np.ndarray        # (n, m) W
    util: np.ndarray           # (n, m) 0..1
    telemetry: dict            # field -> (seconds, hosts)


class _Engine:
    """Generates the rack block by block from t = 0 (samples at k / rate_hz s)."""

    def __init__(self, cfg: RackConfig, seed: int, rate_hz: int,
                 faults: Sequence[FaultSpec] = ()):
        self.cfg, self.rate = cfg, int(rate_hz)
        self.dt = 1.0 / self.rate
        # faults draw from their own seed branch: the components' generators stay as without
        self.faults = FaultSet(cfg.names, [c.kind for c in cfg.components], seed, self.dt)
        for spec in faults:
            self.add_fault(spec)
        self.samples = 0
        self.scheduler = None
        self.tele_fields = TELEMETRY_FIELDS
        if cfg.scheduler is not None:
            # its own seed branch: the components' generators stay as without a scheduler
            self.scheduler = BatchScheduler(cfg.scheduler,
                                            np.random.SeedSequence([seed, 1_000_003]),
                                            cfg.start_unix, cfg.schedule.tz_offset_s)
            self.tele_fields = (*TELEMETRY_FIELDS, APP_RATE_FIELD)
        self._seed = seed
        self._streams = [self._streams_for(c, seed) for c in cfg.components]
        self._switches = [c for c in cfg.components if c.kind == "switch"]

    def _streams_for(self, comp: ComponentSpec, seed: int) -> dict:
        gens = [np.random.default_rng(s)
                for s in np.random.SeedSequence([seed, comp.index]).spawn(7)]
        model, out = comp.model, {}
        if comp.is_host:
            shape = (STORAGE_TELEMETRY if comp.kind == "storage"
                     else GPU_HOST_TELEMETRY if getattr(model, "gpu", None) is not None
                     else TelemetryShape())
            out["telemetry"] = TelemetryStream(model.host, shape, gens[6])
            if comp.trace is None:
                out["workload"] = WorkloadStream(comp.name, comp.workload, self.cfg.schedule,
                                                 self.dt, gens[:4])
        if self.scheduler is not None and comp.name in self.cfg.scheduler.scheduled_hosts:
            rngs = [np.random.default_rng(s) for s in
                    np.random.SeedSequence([seed, comp.index, 1]).spawn(4)]
            out["jobs"] = ScheduledHost(self.scheduler, comp.name, getattr(model, "gpu", None),
                                        self.dt, self.rate, rngs, self.cfg.schedule.tz_offset_s)
        swing = (model.curve.points_w[-1] - model.curve.points_w[0]
                 if comp.kind == "server" else 0.0)
        out["power"] = PowerStream(model.steady_power_w, swing, self.cfg.dynamics[comp.kind],
                                   self.dt, gens[4], gens[5])
        return out

    def add_fault(self, spec: FaultSpec) -> None:
        """Apply ``spec`` from the next block on (FaultSpecError if the rack cannot have it)."""
        comp = self.cfg.components[check_fault(spec, self.cfg.names,
                                               [c.kind for c in self.cfg.components])]
        if spec.kind == "runaway_process" and comp.trace is not None:
            raise FaultSpecError(f"component: runaway_process cannot hit {comp.name!r}, it "
                                 f"replays a recorded power trace")
        self.faults.add(spec)

    def block(self, seconds: int) -> _Block:
        """The next ``seconds`` s of samples: hosts first, then the switches they load."""
        n, m = seconds * self.rate, len(self.cfg.components)
        t_s = (self.samples + np.arange(n)) * self.dt
        if self.scheduler is not None:
            self.scheduler.advance_to((self.samples + n) * self.dt)
        power, util = np.empty((n, m)), np.empty((n, m))
        tele: dict[str, list] = {f: [] for f in self.tele_fields}
        traffic = np.zeros(n)
        for comp in self.cfg.components:
            if comp.is_host:
                traffic += self._host(comp, t_s, power, util, tele)
        share = 1.0 / max(1, len(self._switches))
        for comp in self._switches:
            gbps = traffic * share * 8e-9
            util[:, comp.index] = np.clip(gbps / comp.model.capacity_gbps, 0.0, 1.0)
            power[:, comp.index] = self._power(comp, t_s, util[:, comp.index])
            if self.faults:
                self.faults.power(comp.index, t_s, power[:, comp.index])
        self.samples += n
        stacked = {f: np.column_stack(v) if v else np.zeros((seconds, 0))
                   for f, v in tele.items()}
        return _Block(power, util, stacked)

    def _host(self, comp: ComponentSpec, t_s: np.ndarray, power: np.ndarray,
              util: np.ndarray, tele: dict[str, list]) -> np.ndarray:
        """Fill one host's columns and telemetry; return its mean network bytes/s."""
        streams, i = self._streams[comp.index], comp.index
        util[:, i] = (comp.trace.util_at(t_s) if comp.trace is not None
                      else streams["workload"].block(self.cfg.start_unix + t_s))
        act = streams["jobs"].block(t_s, util[:, i]) if "jobs" in streams else None
        if act is not None:
            util[:, i] = act.util
        # a runaway's load goes into the power model but not into the telemetry's traffic
        base = util[:, i].copy() if self.faults else util[:, i]
        added = self.faults.util(i, t_s, util[:, i]) if self.faults else None
        power[:, i] = self._power(comp, t_s, util[:, i])
        per_second = base.reshape(-1, self.rate).mean(axis=1)
        values = streams["telemetry"].block(per_second)
        if self.scheduler is not None:
            values[APP_RATE_FIELD] = (act.rate_1hz if act is not None
                                      else np.zeros(len(per_second)))
        if act is not None:
            power[:, i] += act.extra_w
            values["net_rx_bytes_per_s"] = values["net_rx_bytes_per_s"] + act.net_rx_1hz
        if self.faults:
            self.faults.power(i, t_s, power[:, i])
            self.faults.telemetry(i, t_s[::self.rate], values, added, self.rate)
        for f, v in values.items():
            tele[f].append(v)
        return streams["telemetry"].mean_traffic_bytes_per_s(base)

    def _power(self, comp: ComponentSpec, t_s: np.ndarray, util: np.ndarray) -> np.ndarray:
        if comp.trace is not None:
            return comp.trace.power_at(t_s)
        return self._streams[comp.index]["power"].block(util)


def generate(hours: float, seed: int | None = None, rate_hz: int | None = None,
             config: str | Path | Mapping | RackConfig | None = None,
             block_s: int = 3600, preset: str | None = None,
             faults: Sequence[FaultSpec] = ()) -> SimData:
    """Simulate ``hours`` h from the config's start (fast mode); same seed, same data.

    ``preset`` (``office``, ``ai``, ``mixed``; :data:`PRESETS`) picks a shipped config instead
    of ``config``; neither: the office day (``config/rack_sim.yaml``). A config with a
    ``scheduler:`` section also returns its job history as ``SimData.events``.

    ``faults`` (:class:`~rackpower_nodes.sim.faults.FaultSpec`) are injected and returned as
    ``SimData.faults``, the ground truth; without them the samples are exactly those of the
    fault-free run. A fault the rack cannot have raises FaultSpecError naming the field.
    """
    if preset is not None:
        if config is not None:
            raise SimConfigError(f"preset={preset!r} and config={config!r}: give one of them")
        config = preset_config(preset)
    cfg = load_config(config)
    seed = _check_seed(cfg.seed if seed is None else seed)
    rate = _check_rate(cfg.rate_hz if rate_hz is None else rate_hz)
    total_s = round(hours * 3600.0)
    if total_s < 1:
        raise SimConfigError(f"hours: {hours!r}, expected at least 1 s of simulation")
    engine = _Engine(cfg, seed, rate, faults)
    m, hosts = len(cfg.components), len(cfg.hosts)
    power = np.empty((total_s * rate, m), dtype=np.float32)
    load = np.empty_like(power)
    tele = {f: np.empty((total_s, hosts), dtype=np.float32) for f in engine.tele_fields}
    done = 0
    while done < total_s:
        secs = min(block_s, total_s - done)
        blk = engine.block(secs)
        power[done * rate:(done + secs) * rate] = blk.power_w
        load[done * rate:(done + secs) * rate] = blk.util
        for f in engine.tele_fields:
            tele[f][done:done + secs] = blk.telemetry[f]
        done += secs
    _log.info("generated %d s x %d components at %d Hz (seed %d)", total_s, m, rate, seed)
    events = engine.scheduler.job_log(total_s) if engine.scheduler is not None else None
    return SimData(cfg.names, tuple(c.kind for c in cfg.components), cfg.hosts, float(rate),
                   cfg.start_unix, seed, power, load, tele,
                   dict(cfg.meta(), hours=total_s / 3600.0, config=_jsonable(cfg.raw)), events,
                   tuple(engine.faults.specs))
