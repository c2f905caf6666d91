"""Plot of simulated rack power: stacked per-component power, rack total, breaker budget.

Uses matplotlib with the Agg backend (no display needed). Components are stacked as 1-minute
means (switches and storage at the bottom, servers grouped by model), the rack total is
drawn over them at 1 s resolution so bursts and spikes show, and the breaker rating and the
derated budget are horizontal lines. Scheduled job windows are marked along the top.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.sim.rack_sim import SimData

__all__ = ["plot_power"]

_log = logging.getLogger(__name__)
_FAMILIES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "YlOrBr", "PuRd", "GnBu")


def _means(values: np.ndarray, per: int) -> np.ndarray:
    """Means over consecutive groups of ``per`` rows (a partial last group is dropped)."""
    rows = (len(values) // per) * per
    return values[:rows].reshape(rows // per, per, *values.shape[1:]).mean(axis=1)


def _colours(data: SimData) -> tuple[list[int], list]:
    """Stack order (switches, storage, then servers by model) and a colour per component."""
    models = list(data.meta.get("models", data.kinds))
    order = ([i for i, k in enumerate(data.kinds) if k == "switch"]
             + [i for i, k in enumerate(data.kinds) if k == "storage"])
    servers = [i for i, k in enumerate(data.kinds) if k == "server"]
    families = list(dict.fromkeys(models[i] for i in servers))
    servers.sort(key=lambda i: families.index(models[i]))
    order += servers
    colours: list = [None] * len(data.names)
    for rank, i in enumerate(order[:len(order) - len(servers)]):
        grey = 0.45 + 0.1 * rank if data.kinds[i] == "switch" else 0.3 + 0.1 * rank
        colours[i] = ((grey, grey, grey) if data.kinds[i] == "switch"
                      else plt.get_cmap("copper")(min(0.9, grey)))
    for f, family in enumerate(families):
        members = [i for i in servers if models[i] == family]
        cmap = plt.get_cmap(_FAMILIES[f % len(_FAMILIES)])
        for j, i in enumerate(members):
            colours[i] = cmap(0.45 + 0.4 * j / max(1, len(members) - 1))
    return order, colours


def _label(data: SimData, i: int) -> str:
    models = data.meta.get("models")
    return f"{data.names[i]} ({models[i]})" if models else data.names[i]


def _times(data: SimData, step_s: float, count: int) -> np.ndarray:
    tz = dt.timezone(dt.timedelta(seconds=data.meta.get("tz_offset_s", 0.0)))
    start = dt.datetime.fromtimestamp(data.start_unix, tz)
    return np.array([start + dt.timedelta(seconds=k * step_s) for k in range(count)])


def _mark_jobs(ax, data: SimData, top: float) -> None:
    """Shade scheduled job windows in a strip along the top of the axes."""
    config = data.meta.get("config")
    if not config:
        return
    schedule = WorkloadSchedule.from_config(config)
    t0 = data.start_unix
    t1 = t0 + len(data.power_w) / data.rate_hz
    tz = dt.timezone(dt.timedelta(seconds=schedule.tz_offset_s))
    lane_h = 0.035
    for lane, job in enumerate(schedule.jobs):
        y0 = 0.99 - (lane + 1) * lane_h
        for start in job.recurrence.starts(t0 - job.duration_s, t1, schedule.tz_offset_s):
            a = dt.datetime.fromtimestamp(max(start, t0), tz)
            b = dt.datetime.fromtimestamp(min(start + job.duration_s, t1), tz)
            if b <= a:
                continue
            ax.axvspan(a, b, ymin=y0 + 0.004, ymax=y0 + lane_h - 0.004, color="0.3",
                       alpha=0.3, lw=0)
            ax.text(a, top * (y0 + lane_h / 2), f" {job.name}", fontsize=7, va="center",
                    ha="left", clip_on=True)


def plot_power(data: SimData, out_png: str | Path, title: str | None = None,
               stack_s: float = 60.0) -> Path:
    """Draw the rack's power over the simulated span into ``out_png`` and return its path."""
    rate = int(data.rate_hz)
    stack = _means(data.power_w.astype(np.float64), max(1, int(stack_s * rate)))
    total = _means(data.total_w, rate)
    order, colours = _colours(data)
    fig, ax = plt.subplots(figsize=(14, 7), dpi=110)
    t_stack = _times(data, stack_s, len(stack))
    ax.stackplot(t_stack, *(stack[:, i] for i in order), colors=[colours[i] for i in order],
                 labels=[_label(data, i) for i in order], lw=0, alpha=0.95)
    ax.plot(_times(data, 1.0, len(total)), total, color="black", lw=0.5,
            label="rack total (1 s mean)")
    breaker, budget = data.meta["breaker_w"], data.meta["budget_w"]
    ax.axhline(breaker, color="crimson", lw=1.6,
               label=f"breaker {data.meta['breaker_a']:g} A = {breaker:.0f} W")
    ax.axhline(budget, color="darkorange", lw=1.6, ls="--",
               label=f"derated budget {100 * data.meta['derating']:.0f} % = {budget:.0f} W")
    top = breaker * 1.25
    ax.set_ylim(0, top)
    ax.set_xlim(t_stack[0], t_stack[0] + dt.timedelta(seconds=len(data.power_w) / rate))
    _mark_jobs(ax, data, top)
    span_h = len(data.power_w) / rate / 3600.0
    ax.xaxis.set_major_locator(mdates.HourLocator(interval=max(1, int(span_h // 12))))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M" if span_h <= 24 else "%a %H:%M",
                                                      tz=t_stack[0].tzinfo))
    offset_h = data.meta.get("tz_offset_s", 0.0) / 3600.0
    ax.set_xlabel(f"time of day (UTC{offset_h:+g} h), {t_stack[0]:%a %Y-%m-%d}")
    ax.set_ylabel("wall power (W)")
    ax.set_title(title or f"Simulated rack power: {len(data.names)} components, seed "
                          f"{data.seed}, {data.rate_hz:g} Hz (stacked: 1 min means)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    _log.info("wrote %s", out)
    return out
