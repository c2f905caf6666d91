"""What a scheduled host does, sample by sample: its CPU load and GPU power from its jobs.

For each job on the host: the startup phase (``startup_s``: CPU at ``startup_util``, GPUs
idle), then the main phase by kind: ``cpu``/``io`` at the job's ``util`` (with a little
jitter); ``gpu-train`` iterations (compute then communication) and checkpoint phases, the
same function of time on every host of the job, so they swing in phase; ``gpu-infer`` boards
loaded by the served request rate. The host's utilisation is the larger of its own workload
and its jobs'; a GPU server adds its boards, fans (thermal lag of the boards' load) and noise
that grows with the load, as wall power through the GPU PSUs. Times in s after the start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.sim.rack_model import ar1_filter, lag_filter
from rackpower_nodes.sim.rack_model.gpu import GpuSpec
from rackpower_nodes.sim.scheduler.inference import RequestStream
from rackpower_nodes.sim.scheduler.queue import BatchScheduler, Job

__all__ = ["HostActivity", "ScheduledHost", "training_board_w"]

_SUB = 4                    # sub-samples per sample: a board's mean power over its sample
_TRAIN_CPU, _CKPT_CPU = 0.35, 0.15


def training_board_w(job: Job, gpu: GpuSpec, t_s: np.ndarray, dt_s: float) -> np.ndarray:
    """Mean board power (W) of a training job's GPUs over each sample at ``t_s`` (s): the
    iteration's compute and communication phases, checkpoint phases every
    ``checkpoint_every_s``; a pure function of time, so all the job's hosts agree."""
    spec, p = job.cls.training, job.params
    offs = (np.arange(_SUB) + 0.5) / _SUB * dt_s
    rel = t_s[:, None] + offs[None, :] - job.main_start_s
    ckpt = np.mod(rel + p["phase_s"], spec.checkpoint_every_s) < p["checkpoint_s"]
    compute = np.mod(rel, p["iter_s"]) < spec.compute_frac * p["iter_s"]
    watts = np.where(ckpt, gpu.checkpoint_w, np.where(compute, gpu.compute_w, gpu.comm_w))
    return watts.mean(axis=1)


def in_checkpoint(job: Job, t_s: np.ndarray) -> np.ndarray:
    """Whether a training job is writing a checkpoint at ``t_s`` (s)."""
    spec, p = job.cls.training, job.params
    rel = np.asarray(t_s) - job.main_start_s
    return (rel >= 0) & (np.mod(rel + p["phase_s"], spec.checkpoint_every_s) < p["checkpoint_s"])


@dataclass(frozen=True)
class HostActivity:
    """One block of a host: utilisation (0..1) and extra wall power (W) per sample; the
    offered request rate and the extra network input (bytes/s) per second."""

    util: np.ndarray
    extra_w: np.ndarray
    rate_1hz: np.ndarray
    net_rx_1hz: np.ndarray


class ScheduledHost:
    """The jobs' effect on one host, block by block (``rngs``: four generators: jitter, noise,
    and the request rate's wander and surges)."""

    def __init__(self, scheduler: BatchScheduler, host: str, gpu: GpuSpec | None, dt_s: float,
                 rate_hz: int, rngs, tz_offset_s: float = 0.0):
        self.sched, self.host, self.gpu, self._dt, self._rate = (scheduler, host, gpu, dt_s,
                                                                 int(rate_hz))
        self._rng_jitter, self._rng_noise, *rng_req = rngs
        self._jitter = self._noise = 0.0
        self._heat: float | None = None
        infer = [c.inference for c in scheduler.cfg.classes
                 if c.inference is not None and host in c.hosts]
        self._requests = (RequestStream(infer[0], dt_s, tz_offset_s, rng_req)
                          if infer else None)

    def block(self, t_s: np.ndarray, base_util: np.ndarray) -> HostActivity:
        """The host over samples ``t_s`` (s after the start); ``base_util`` its own load."""
        n, dt = len(t_s), self._dt
        a = math.exp(-dt / 2.0)
        jitter = ar1_filter(0.03 * math.sqrt(1 - a * a) * self._rng_jitter.standard_normal(n),
                            a, self._jitter)
        self._jitter = float(jitter[-1])
        cpu = np.zeros(n)
        idle = self.gpu.idle_w if self.gpu is not None else 0.0
        board = np.full(n, idle)
        infer_on = np.zeros(n, dtype=bool)
        for job in self.sched.jobs_on(self.host, float(t_s[0]), float(t_s[-1]) + dt):
            i0, m0, i1 = np.searchsorted(t_s, [job.start_s, job.main_start_s, job.end_s])
            m0 = min(max(m0, i0), i1)
            cpu[i0:m0] = job.cls.startup_util
            main, kind = slice(m0, i1), job.cls.kind
            if kind in ("cpu", "io"):
                cpu[main] = job.cls.util + jitter[main]
            elif kind == "gpu-train" and self.gpu is not None and i1 > m0:
                board[main] = training_board_w(job, self.gpu, t_s[main], dt)
                cpu[main] = np.where(in_checkpoint(job, t_s[main]), _CKPT_CPU, _TRAIN_CPU)
            elif kind == "gpu-infer":
                infer_on[main] = True
        offered = np.zeros(n)
        if self._requests is not None:
            offered, served = self._requests.block(self.sched.start_unix + t_s, infer_on)
            load = np.clip(served / self._requests.spec.capacity_rps, 0.0, 1.0)
            cpu = np.where(infer_on, 0.08 + 0.3 * load, cpu)
            if self.gpu is not None:
                board = np.where(infer_on, idle + (self.gpu.infer_max_w - idle) * load, board)
        util = np.maximum(base_util, np.clip(cpu, 0.0, 1.0))
        extra = self._gpu_wall(board) if self.gpu is not None else np.zeros(n)
        rate_1hz = offered.reshape(-1, self._rate).mean(axis=1)
        per_req = self._requests.spec.bytes_per_request if self._requests is not None else 0.0
        return HostActivity(util, extra, rate_1hz, rate_1hz * per_req)

    def _gpu_wall(self, board: np.ndarray) -> np.ndarray:
        """Boards + fans through the GPU PSUs (W), plus load-dependent noise."""
        g, dt, n = self.gpu, self._dt, len(board)
        load = (board - g.idle_w) / max(g.compute_w - g.idle_w, 1e-9)
        if self._heat is None:
            self._heat = float(load[0])
        heat = lag_filter(load, g.fan_tau_s, dt, self._heat)
        self._heat = float(heat[-1])
        fan = g.fan_min_w + (g.fan_max_w - g.fan_min_w) * np.clip(heat, 0.0, 1.0) ** 3
        a = math.exp(-dt / g.noise_tau_s) if g.noise_tau_s > 0 else 0.0
        noise = ar1_filter(math.sqrt(1 - a * a) * self._rng_noise.standard_normal(n), a,
                           self._noise)
        self._noise = float(noise[-1])
        sigma = g.noise_idle_w + (g.noise_active_w - g.noise_idle_w) * np.clip(load, 0.0, 1.0)
        return np.maximum(g.wall_w(g.count * board + fan) + sigma * noise, 0.0)
