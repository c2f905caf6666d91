"""The simulator as a source of training data: a run as ComponentSeries.

:func:`from_sim` turns a simulator run (:class:`~rackpower_nodes.sim.rack_sim.SimData` or a
folder it was saved to) into the format the forecasting core reads,
:class:`~rackpower_nodes.core.forecast.series.ComponentSeries`: power at the run's rate as
step means, host telemetry held from the end of each second, the component spec from the
run's config (the model's steady power at load 0 and 1, with a GPU server's boards at idle
and in compute), its workload schedule and, for a run with a scheduler, its job history
(``ComponentSeries.events``: the :class:`~rackpower_nodes.core.workload_events.JobLog`). It lives
with the simulator, so the core and the other sources never import the simulator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from rackpower_nodes.core.forecast.series import (
    TELEMETRY,
    ComponentSeries,
    estimate_spec,
    hold_telemetry,
    split_on_gaps,
    step_index,
)
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.sim import rack_model as rm
from rackpower_nodes.sim.rack_sim import SimData

__all__ = ["from_sim"]

_log = logging.getLogger(__name__)


def from_sim(folder_or_simdata, step_s: float = 0.1) -> list[ComponentSeries]:
    """Series from a simulator run (:class:`~rackpower_nodes.sim.rack_sim.SimData` or a
    folder it was saved to): power at ``rate_hz`` as step means, telemetry rows (means over
    each second) stamped at the end of their second and held. idle/max (W) from the model's
    curve in the run's config, else estimated."""
    data = folder_or_simdata
    if not isinstance(data, SimData):
        data = SimData.load(folder_or_simdata)
    t = data.start_unix + np.arange(len(data.power_w)) / data.rate_hz
    seconds = len(next(iter(data.telemetry.values()))) if data.telemetry else 0
    tele_t = data.start_unix + np.arange(1, seconds + 1, dtype=np.float64)
    specs = _sim_specs(data)
    config = data.meta.get("config")
    schedule = WorkloadSchedule.from_config(config) if isinstance(config, Mapping) else None
    source = f"sim seed {data.seed}"
    events = getattr(data, "events", None)
    out: list[ComponentSeries] = []
    for i, name in enumerate(data.names):
        values = _sim_host_telemetry(data, name, seconds)
        spec = specs[i] or estimate_spec(data.power_w[:, i])
        for t0, p in split_on_gaps(t, data.power_w[:, i], step_s=step_s):
            steps = step_index(t0, step_s) + np.arange(len(p))
            tel = hold_telemetry(steps, tele_t, values, step_s)
            out.append(ComponentSeries(name, t0, step_s, p, tel, *spec, schedule, source,
                                       events=events))
    return out


def _sim_host_telemetry(data, name: str, seconds: int) -> np.ndarray:
    """(seconds, 6) float64 telemetry of one simulated component (NaN for switches)."""
    if name not in data.hosts:
        return np.full((seconds, len(TELEMETRY)), np.nan)
    h = data.hosts.index(name)
    cols = [data.telemetry[f][:, h].astype(np.float64) for f in (
        "cpu_util", "mem_used_bytes", "net_rx_bytes_per_s", "net_tx_bytes_per_s",
        "disk_read_bytes_per_s", "disk_write_bytes_per_s")]
    total = data.meta.get("mem_total_bytes", [])
    cols[1] = cols[1] / float(total[h]) if h < len(total) and total[h] else cols[1] * np.nan
    return np.column_stack(cols)


def _sim_specs(data) -> list[tuple[float, float] | None]:
    """(idle_w, max_w) per component from the simulator models at load 0 and 1, or None."""
    raw, models = data.meta.get("config"), data.meta.get("models")
    if not isinstance(raw, Mapping) or not isinstance(models, list):
        return [None] * len(data.names)
    sections = {"server": "server_models", "switch": "switch_models",
                "storage": "storage_models"}
    out: list[tuple[float, float] | None] = []
    for kind, model in zip(data.kinds, models, strict=True):
        try:
            entry = raw[sections[kind]][model]
            if kind == "server":
                curves = {n: rm.PsuCurve.from_config(n, v, f"psu_curves.{n}")
                          for n, v in (raw.get("psu_curves") or {}).items()}
                m = rm.ServerModel.from_config(model, entry, model, curves)
            else:
                cls = rm.SwitchModel if kind == "switch" else rm.StorageModel
                m = cls.from_config(model, entry, model)
            lo, hi = (float(v) for v in m.steady_power_w(np.array([0.0, 1.0])))
            gpu = getattr(m, "gpu", None)
            if gpu is not None:
                lo += float(gpu.wall_w(gpu.count * gpu.idle_w + gpu.fan_min_w))
                hi += gpu.peak_w()
            out.append((lo, hi))
        except (KeyError, TypeError, rm.SimConfigError) as exc:
            _log.warning("no spec for %s model %r in the run's config (%s); estimating",
                         kind, model, exc)
            out.append(None)
    return out
