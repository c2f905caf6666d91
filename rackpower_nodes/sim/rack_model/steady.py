"""Steady-state power models of rack components: SPECpower load curves, PSUs, switches, storage.

Servers follow a SPECpower_ssj2008 11-point curve (wall power in W at ActiveIdle and at 10 %
.. 100 % target load), interpolated linearly in utilisation. SPECpower measures at the wall
with the power supply the system was tested with, so the curve *is* wall power for that
reference PSU. A server model may name a different installed PSU: the curve is then converted
to DC power through the reference PSU's efficiency and back to wall power through the
installed one (``P_wall = P_dc / eff(P_dc / rating)``). Without an installed PSU the steady
state equals the published curve exactly.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.sim.rack_model.checks import SimConfigError, cfg_float, cfg_map, cfg_numbers
from rackpower_nodes.sim.rack_model.gpu import GpuSpec

LOAD_POINTS = np.linspace(0.0, 1.0, 11)     # ActiveIdle, 10 % .. 100 % target load


@dataclass(frozen=True)
class LoadCurve:
    """SPECpower 11-point curve: wall power (W) at ActiveIdle, 10 % .. 100 % load."""

    points_w: tuple[float, ...]

    @classmethod
    def from_config(cls, values, key: str) -> LoadCurve:
        """Validate 11 finite, positive, non-decreasing values (W) from ``key``."""
        pts = cfg_numbers(values, key, 0.0, 1e5, "W: ActiveIdle, 10 % .. 100 % load", 11)
        if pts[0] <= 0.0:
            raise SimConfigError(f"{key}[0]: {pts[0]!r} W, expected an idle power > 0 W")
        for i in range(1, 11):
            if pts[i] < pts[i - 1]:
                raise SimConfigError(f"{key}: not non-decreasing at index {i} "
                                     f"({pts[i]} W after {pts[i - 1]} W)")
        return cls(tuple(pts))

    def power_w(self, util: np.ndarray) -> np.ndarray:
        """Wall power (W) at utilisation ``util`` (0..1), linear between the 11 points."""
        return np.interp(util, LOAD_POINTS, self.points_w)


@dataclass(frozen=True)
class PsuCurve:
    """Efficiency (0..1) against output load as a fraction of the PSU rating."""

    name: str
    load_frac: tuple[float, ...]
    efficiency: tuple[float, ...]

    @classmethod
    def from_config(cls, name: str, raw, key: str) -> PsuCurve:
        raw = cfg_map(raw, key)
        frac = cfg_numbers(raw.get("load_frac"), f"{key}.load_frac", 0.0, 2.0)
        eff = cfg_numbers(raw.get("efficiency"), f"{key}.efficiency", 0.3, 1.0, "",
                          len(frac))
        if len(frac) < 2 or any(b <= a for a, b in itertools.pairwise(frac)):
            raise SimConfigError(f"{key}.load_frac: {frac!r}, expected >= 2 strictly "
                                 "increasing load fractions")
        return cls(name, tuple(frac), tuple(eff))


@dataclass(frozen=True)
class Psu:
    """A power supply: efficiency curve and DC output rating (W)."""

    curve: PsuCurve
    rating_w: float

    def efficiency(self, dc_w: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(dc_w) / self.rating_w, self.curve.load_frac,
                         self.curve.efficiency)

    def wall_from_dc(self, dc_w: np.ndarray) -> np.ndarray:
        """Wall (AC input) power in W for DC output ``dc_w`` (W)."""
        return np.asarray(dc_w) / self.efficiency(dc_w)

    def dc_from_wall(self, wall_w: np.ndarray) -> np.ndarray:
        """DC output (W) for wall power ``wall_w`` (W): fixed point of dc = wall * eff(dc)."""
        wall_w = np.asarray(wall_w, dtype=np.float64)
        dc = wall_w * 0.9
        for _ in range(40):
            dc = wall_w * self.efficiency(dc)
        return dc


@dataclass(frozen=True)
class HostSpec:
    """Capacities behind a host's telemetry: memory (bytes), NIC and disk (bytes/s), CPUs."""

    mem_total_bytes: float
    nic_bytes_per_s: float
    disk_bytes_per_s: float
    n_cpus: int = 16

    @classmethod
    def from_config(cls, raw: Mapping, key: str) -> HostSpec:
        """Read ``mem_total_gb`` (GiB), ``nic_gbps`` (Gbit/s), ``disk_mb_per_s`` (MB/s) and
        ``cpus`` (logical CPUs), each with a default."""
        return cls(cfg_float(raw, "mem_total_gb", key, 64.0, 0.5, 65536.0, "GiB") * 2.0**30,
                   cfg_float(raw, "nic_gbps", key, 10.0, 0.1, 800.0, "Gbit/s") * 1e9 / 8,
                   cfg_float(raw, "disk_mb_per_s", key, 500.0, 1.0, 1e5, "MB/s") * 1e6,
                   int(cfg_float(raw, "cpus", key, 16, 1, 4096)))


@dataclass(frozen=True)
class ServerModel:
    """A server: SPECpower curve, optional PSU conversion, host capacities, curve source."""

    name: str
    curve: LoadCurve
    host: HostSpec
    source: Mapping
    reference_psu: Psu | None = None
    psu: Psu | None = None
    gpu: GpuSpec | None = None

    @classmethod
    def from_config(cls, name: str, raw, key: str,
                    psu_curves: Mapping[str, PsuCurve]) -> ServerModel:
        """Parse ``power_w`` (11 points), ``source``, host capacities, optional PSUs and an
        optional ``gpu:`` section (:class:`GpuSpec`, with its own ``gpu.psu``)."""
        raw = cfg_map(raw, key)
        curve = LoadCurve.from_config(raw.get("power_w"), f"{key}.power_w")
        source = cfg_map(raw.get("source"), f"{key}.source")
        if not isinstance(source.get("system"), str):
            raise SimConfigError(f"{key}.source.system: {source.get('system')!r}, expected the "
                                 "name of the measured system")
        ref = _psu(raw.get("reference_psu"), f"{key}.reference_psu", psu_curves)
        psu = _psu(raw.get("psu"), f"{key}.psu", psu_curves)
        if psu is not None and ref is None:
            raise SimConfigError(f"{key}.psu: given without {key}.reference_psu, expected both "
                                 "(the curve is wall power with the reference PSU)")
        gpu = None
        if "gpu" in raw:
            gpu_raw = cfg_map(raw["gpu"], f"{key}.gpu")
            gpu = GpuSpec.from_config(gpu_raw, f"{key}.gpu",
                                      _psu(gpu_raw.get("psu"), f"{key}.gpu.psu", psu_curves))
        return cls(name, curve, HostSpec.from_config(raw, key), dict(source), ref, psu, gpu)

    @functools.cached_property
    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(utilisation grid, wall power W) used by :meth:`steady_power_w`."""
        if self.psu is None or self.reference_psu is None:
            return LOAD_POINTS, np.asarray(self.curve.points_w)
        grid = np.linspace(0.0, 1.0, 201)
        dc = self.reference_psu.dc_from_wall(self.curve.power_w(grid))
        return grid, self.psu.wall_from_dc(dc)

    def steady_power_w(self, util: np.ndarray) -> np.ndarray:
        """Settled wall power (W) at utilisation ``util`` (0..1)."""
        grid, watts = self.table
        return np.interp(util, grid, watts)


def _psu(raw, key: str, curves: Mapping[str, PsuCurve]) -> Psu | None:
    if raw is None:
        return None
    raw = cfg_map(raw, key)
    name = raw.get("curve")
    if name not in curves:
        raise SimConfigError(f"{key}.curve: {name!r} is not one of psu_curves {sorted(curves)}")
    return Psu(curves[name], cfg_float(raw, "rating_w", key, None, 1.0, 1e5, "W"))


@dataclass(frozen=True)
class SwitchModel:
    """Top-of-rack switch: ``base_w + ports * per_port_w + w_per_gbps * traffic`` (W)."""

    name: str
    base_w: float
    ports: int
    per_port_w: float
    w_per_gbps: float
    capacity_gbps: float

    @classmethod
    def from_config(cls, name: str, raw, key: str) -> SwitchModel:
        raw = cfg_map(raw, key)
        return cls(name, cfg_float(raw, "base_w", key, None, 0.0, 5000.0, "W"),
                   int(cfg_float(raw, "ports", key, 48, 1, 1024)),
                   cfg_float(raw, "per_port_w", key, 1.0, 0.0, 50.0, "W"),
                   cfg_float(raw, "w_per_gbps", key, 0.05, 0.0, 10.0, "W per Gbit/s"),
                   cfg_float(raw, "capacity_gbps", key, 1200.0, 1.0, 1e5, "Gbit/s"))

    def steady_power_w(self, load: np.ndarray) -> np.ndarray:
        """Power (W) at traffic ``load`` as a fraction (0..1) of ``capacity_gbps``."""
        fixed = self.base_w + self.ports * self.per_port_w
        return fixed + self.w_per_gbps * self.capacity_gbps * np.asarray(load)


@dataclass(frozen=True)
class StorageModel:
    """Storage node: ``idle_w + w_per_kiops * IO rate / 1000`` (W); IO rate = load * max_iops."""

    name: str
    idle_w: float
    max_iops: float
    w_per_kiops: float
    host: HostSpec

    @classmethod
    def from_config(cls, name: str, raw, key: str) -> StorageModel:
        raw = cfg_map(raw, key)
        return cls(name, cfg_float(raw, "idle_w", key, None, 1.0, 5000.0, "W"),
                   cfg_float(raw, "max_iops", key, 50000.0, 1.0, 1e8, "IO/s"),
                   cfg_float(raw, "w_per_kiops", key, 2.0, 0.0, 100.0, "W per 1000 IO/s"),
                   HostSpec.from_config(raw, key))

    def steady_power_w(self, load: np.ndarray) -> np.ndarray:
        """Power (W) at IO ``load`` (0..1 of ``max_iops``)."""
        return self.idle_w + self.w_per_kiops * self.max_iops / 1000.0 * np.asarray(load)
