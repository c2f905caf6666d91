"""The GPU part of a GPU server model: boards, the PSUs that feed them, fans and noise.

A server model may carry a ``gpu:`` section; its ``power_w`` curve then describes the host
platform (CPUs, memory, NICs) and the GPU boards, their fans and their PSU losses add to it.
Board power (W, per board) at idle, in the compute and communication phases of a training
iteration, while writing a checkpoint, and at full inference load; fans follow a thermal lag
of the boards' load (``fan.tau_s``, s) with a cubic fan law; noise (W, per server, AR(1) with
``noise.tau_s``) grows from ``noise.idle_w`` at idle to ``noise.active_w`` at full compute.
Sources of the defaults: docs/rack-simulator.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from rackpower_nodes.sim.rack_model.checks import SimConfigError, cfg_float, cfg_map


@dataclass(frozen=True)
class GpuSpec:
    """GPU boards of one server (W per board) and what they share (W per server); ``psu`` a
    :class:`~rackpower_nodes.sim.rack_model.steady.Psu` (or None: a flat 94 % efficiency)."""

    count: int
    idle_w: float
    compute_w: float
    comm_w: float
    checkpoint_w: float
    infer_max_w: float
    psu: object | None
    fan_min_w: float
    fan_max_w: float
    fan_tau_s: float
    noise_idle_w: float
    noise_active_w: float
    noise_tau_s: float

    @classmethod
    def from_config(cls, raw, key: str, psu) -> GpuSpec:
        raw = cfg_map(raw, key)
        fan = cfg_map(raw.get("fan", {}), f"{key}.fan")
        noise = cfg_map(raw.get("noise", {}), f"{key}.noise")
        idle = cfg_float(raw, "idle_w", key, 90.0, 0.0, 5000.0, "W")
        spec = cls(int(cfg_float(raw, "count", key, 8, 1, 64)), idle,
                   cfg_float(raw, "compute_w", key, 550.0, idle, 5000.0, "W"),
                   cfg_float(raw, "comm_w", key, 300.0, idle, 5000.0, "W"),
                   cfg_float(raw, "checkpoint_w", key, 150.0, idle, 5000.0, "W"),
                   cfg_float(raw, "infer_max_w", key, 450.0, idle, 5000.0, "W"), psu,
                   cfg_float(fan, "min_w", f"{key}.fan", 150.0, 0.0, 1e4, "W"),
                   cfg_float(fan, "max_w", f"{key}.fan", 900.0, 0.0, 1e4, "W"),
                   cfg_float(fan, "tau_s", f"{key}.fan", 40.0, 0.0, 3600.0, "s"),
                   cfg_float(noise, "idle_w", f"{key}.noise", 3.0, 0.0, 1e4, "W"),
                   cfg_float(noise, "active_w", f"{key}.noise", 40.0, 0.0, 1e4, "W"),
                   cfg_float(noise, "tau_s", f"{key}.noise", 0.3, 0.0, 600.0, "s"))
        if spec.fan_max_w < spec.fan_min_w:
            raise SimConfigError(f"{key}.fan: max_w {spec.fan_max_w} < min_w {spec.fan_min_w}")
        return spec

    def fan_w(self, heat: float) -> float:
        """Fan power (W) at a thermal load ``heat`` (0..1 of full compute)."""
        x = min(max(heat, 0.0), 1.0)
        return self.fan_min_w + (self.fan_max_w - self.fan_min_w) * x ** 3

    def wall_w(self, dc_w):
        """Wall power (W) drawn for ``dc_w`` (W) of boards and fans through the GPU PSUs."""
        return dc_w / 0.94 if self.psu is None else self.psu.wall_from_dc(dc_w)

    def peak_w(self) -> float:
        """Wall power (W) of boards and fans with every board in compute, fans at full."""
        return float(self.wall_w(self.count * self.compute_w + self.fan_max_w))
