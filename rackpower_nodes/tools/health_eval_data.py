"""Data for ``rackpower-health-eval``: the monitor replayed over health frames, and the frames.

- :func:`replay` feeds a :class:`~rackpower_nodes.core.health.HealthFrame` to a health
  monitor a chunk of rows at a time (``chunk_s`` s, default 60) and yields each chunk's
  verdicts with the time they were known (the chunk's last row);
- :func:`fault_marks` keeps of such a stream only the ``fault`` verdicts, each marked *new*
  when that component's previous verdict was not ``fault`` (a transition: what an operator
  would be paged for);
- :func:`sim_frame` simulates a preset's day with injected faults (``sim.faults``) and
  returns its per-second health frame; :func:`shifted` moves a frame in time, so that
  independent days can be monitored one after the other as a week;
- :func:`bsc_frames` turns the BSC traces into one single-component frame per server, its
  workloads in sequence (no reference meter: ``ref_w`` NaN; util, disk and network from its
  telemetry; the board's min/max/std unknown: the traces are 2 s means).
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rackpower_nodes.core.forecast.series import TELEMETRY
from rackpower_nodes.core.health import FAULT_CLASSES, FRAME_FIELDS, HealthFrame, HealthVerdict

__all__ = ["BscServer", "FaultMark", "bsc_frames", "day_kinds", "draw_faults", "fault_marks",
           "replay", "row_spacing", "shifted", "sim_frame", "sim_start"]

_log = logging.getLogger("rackpower_health_eval")

#: gap left between two BSC segments laid in sequence, s (a gap in a frame is a gap)
BSC_GAP_S = 60.0


@dataclass(frozen=True)
class FaultMark:
    """A ``fault`` verdict on ``component`` known at ``t_unix``; ``new``: the previous verdict
    on that component was not ``fault`` (a transition into fault)."""

    component: str
    t_unix: float
    cause: str
    sensor_fault: bool
    new: bool


def replay(monitor, frame: HealthFrame, chunk_s: float = 60.0
           ) -> Iterator[tuple[float, list[HealthVerdict]]]:
    """``(t_unix, verdicts)`` per chunk of ``frame``: the rows in ``[k, k + 1) * chunk_s``
    (Unix s; empty chunks, inside gaps, are skipped); ``t_unix`` is the chunk's last row,
    when its verdicts are known."""
    if not chunk_s > 0:
        raise ValueError(f"chunk_s: {chunk_s!r}, expected > 0 s")
    t = frame.t_unix
    if len(t) == 0:
        return
    first = np.floor(t[0] / chunk_s) * chunk_s          # chunks on whole multiples of chunk_s
    edges = np.arange(first, t[-1] + chunk_s, chunk_s)
    cuts = np.unique(np.concatenate([[0], np.searchsorted(t, edges[1:]), [len(t)]]))
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b > a:
            yield float(t[b - 1]), list(monitor.update(frame.rows(int(a), int(b))))


def fault_marks(stream: Iterable[tuple[float, Sequence[HealthVerdict]]]) -> list[FaultMark]:
    """The ``fault`` verdicts of a stream of ``(t_unix, verdicts)``, in order, each marked new
    when it is a transition (the component's previous verdict in the stream was not fault)."""
    previous: dict[str, str] = {}
    marks = []
    for t, verdicts in stream:
        for v in verdicts:
            if v.state == "fault":
                marks.append(FaultMark(v.component, float(t), v.cause, v.sensor_fault,
                                       previous.get(v.component) != "fault"))
            previous[v.component] = v.state
    return marks


def row_spacing(t_unix: np.ndarray) -> float:
    """The usual spacing of a frame's rows, s (median gap; 1 s for a single row)."""
    return float(np.median(np.diff(t_unix))) if len(t_unix) > 1 else 1.0


def shifted(frame: HealthFrame, offset_s: float) -> HealthFrame:
    """``frame`` with ``offset_s`` added to its times (the arrays are shared)."""
    return replace(frame, t_unix=frame.t_unix + offset_s)


def sim_frame(preset: str, seed: int, hours: float, faults: Sequence = ()
              ) -> tuple[HealthFrame, float]:
    """The health frame of ``hours`` h of ``preset`` (seed ``seed``) with ``faults``
    injected, and the run's start (Unix s; fault times are seconds after it)."""
    from rackpower_nodes.sim.faults.frames import health_frame
    from rackpower_nodes.sim.rack_sim import generate

    data = generate(hours, seed=seed, preset=preset, faults=list(faults))
    return health_frame(data), float(data.start_unix)


def day_kinds(day: int, per_day: int) -> list[str]:
    """Fault classes of held-out day ``day``: the classes in turn, so each is injected about
    as often as the others."""
    return [FAULT_CLASSES[(day * per_day + j) % len(FAULT_CLASSES)] for j in range(per_day)]


def draw_faults(preset: str, seed: int, kinds: Sequence[str], onset_s: tuple[float, float]
                ) -> list:
    """One fault of each of ``kinds`` on distinct components of ``preset``'s rack, drawn by
    ``sim.faults.plan.random_faults`` (its ranges) from seeds derived from the day's and the
    preset (so that two presets' days of the same seed get different faults), in the order
    of ``kinds``. Where that order leaves a kind no component (the kinds before it took the
    only ones it can hit: both storage nodes before ``disk_retries``), the day is drawn again
    with the kinds that can hit the fewest components first (each kind from its own seeds,
    as before); the faults come back in the order of ``kinds`` either way."""
    from rackpower_nodes.sim.faults.effects import ALLOWED_KINDS
    from rackpower_nodes.sim.rack_sim import load_config, preset_config

    try:
        return _draw_in_order(preset, seed, kinds, onset_s, range(len(kinds)))
    except _NoFreeComponent:
        comps = [c.kind for c in load_config(preset_config(preset)).components]
        reach = [sum(k in ALLOWED_KINDS[kind] for k in comps) for kind in kinds]
        order = sorted(range(len(kinds)), key=lambda j: reach[j])
        return _draw_in_order(preset, seed, kinds, onset_s, order)


class _NoFreeComponent(ValueError):
    pass


def _draw_in_order(preset: str, seed: int, kinds: Sequence[str],
                   onset_s: tuple[float, float], order: Sequence[int]) -> list:
    from rackpower_nodes.sim.faults.plan import random_faults

    salt = zlib.crc32(preset.encode()) % 1000
    out, used = [None] * len(kinds), set()
    for j in order:
        for attempt in range(100):
            draw = (seed * 1000 + salt) * 1000 + 100 * j + attempt
            (f,) = random_faults(preset, draw, kinds=[kinds[j]], per_run=1,
                                 start_s=onset_s[0], end_s=onset_s[1])
            if f.component not in used:
                break
        else:
            raise _NoFreeComponent(f"{preset}: no free component left for {kinds[j]} "
                                   f"({len(kinds)} faults per day)")
        used.add(f.component)
        out[j] = f
    return out


def sim_start(preset: str) -> float:
    """When ``preset``'s simulated runs start (Unix s)."""
    from rackpower_nodes.sim.rack_sim import load_config, preset_config

    return float(load_config(preset_config(preset)).start_unix)


@dataclass
class BscServer:
    """One BSC server as a rack component: ``frames[k]`` is workload ``workloads[k]``."""

    name: str
    workloads: list[str]
    frames: list[HealthFrame]


def _segment_frame(name: str, t0: float, series) -> HealthFrame:
    """One ComponentSeries segment as a single-component frame starting at ``t0``."""
    n = len(series.power_w)
    tel = np.asarray(series.telemetry, np.float64)
    col = {k: tel[:, i] for i, k in enumerate(TELEMETRY)}
    nan = np.full((n, 1), np.nan)
    fields = {
        "board_mean_w": np.asarray(series.power_w, np.float64)[:, None],
        "board_min_w": nan, "board_max_w": nan, "board_std_w": nan, "ref_w": nan,
        "util": col["cpu_util"][:, None],
        "disk_bps": (col["disk_read_Bps"] + col["disk_write_Bps"])[:, None],
        "net_bps": (col["net_rx_Bps"] + col["net_tx_Bps"])[:, None],
        "app_rate": nan, "job_running": nan, "psu_in_w": nan, "psu_out_w": nan,
    }
    t = t0 + np.arange(n) * float(series.step_s)
    return HealthFrame(t, (name,), ("server",), *(fields[f] for f in FRAME_FIELDS))


def bsc_frames(folder: str | Path) -> list[BscServer]:
    """Per server folder of ``folder`` (``<server>/<workload>.csv``), its workloads in file
    name order, each one frame of its gap-free segments laid one after another (a
    ``BSC_GAP_S`` gap between segments), the next workload starting after the previous (the
    first at the server's first recorded time).

    Raises FileNotFoundError when ``folder`` is not a folder with server folders of CSVs.
    """
    from rackpower_nodes.sources.csv_files import from_bsc_csv

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"BSC traces: {folder} is not a folder")
    servers = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.csv"))
        if not files:
            continue
        t0, frames, workloads = None, [], []
        for path in files:
            parts = []
            for seg in from_bsc_csv(path):
                t0 = float(seg.t0_unix) if t0 is None else t0     # the server's first time
                parts.append(_segment_frame(sub.name, t0, seg))
                t0 = float(parts[-1].t_unix[-1]) + BSC_GAP_S
            if parts:
                frames.append(HealthFrame.concat(parts))
                workloads.append(path.stem)
        servers.append(BscServer(sub.name, workloads, frames))
        _log.info("BSC %s: %d workloads, %.1f h", sub.name, len(frames),
                  sum(len(f) for f in frames) * 2.0 / 3600.0)
    if not servers:
        raise FileNotFoundError(f"BSC traces: no <server>/<workload>.csv under {folder}")
    return servers
