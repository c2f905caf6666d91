"""Rack simulator output: `SimData` (fast-mode samples) and its files, and `HostState`.

:class:`SimData` holds per-component power (W) and utilisation at ``rate_hz`` and host
telemetry at 1 Hz; :meth:`SimData.save` writes it as ``rack_sim.npz`` plus the JSON sidecar
``rack_sim.json`` (layout in the package docstring, :mod:`rackpower_nodes.sim.rack_sim`) and
:meth:`SimData.load` reads it back. :class:`HostState` is one host's telemetry over one second.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.core.workload_events import JobLog
from rackpower_nodes.sim.faults.effects import board_view
from rackpower_nodes.sim.faults.spec import FaultSpec
from rackpower_nodes.sim.rack_model import SimConfigError
from rackpower_nodes.sim.workload import TELEMETRY_FIELDS

FORMAT = "rackpower-sim/1"
#: Extra per-second telemetry of a run with a scheduler: the offered request rate (req/s) of
#: each host's inference service (0 where none runs), as its exporter would count it.
APP_RATE_FIELD = "app_requests_per_s"
JOBS_FILE = "rack_sim_jobs.json"
#: the injected faults (ground truth), one FaultSpec.as_dict per entry
FAULTS_FILE = "rack_sim_faults.json"


@dataclass(frozen=True)
class HostState:
    """Telemetry of one host over one second: CPU utilisation 0..1, memory in bytes, network
    and disk rates in bytes/s."""

    host: str
    t_s: float
    cpu_util: float
    mem_used_bytes: float
    mem_total_bytes: float
    net_rx_bytes_per_s: float
    net_tx_bytes_per_s: float
    disk_read_bytes_per_s: float
    disk_write_bytes_per_s: float
    n_cpus: int = 16


@dataclass
class SimData:
    """Fast-mode output: per-component power (W) and utilisation at ``rate_hz``, telemetry at
    1 Hz, and ``meta`` (electrical limits, config).

    ``power_w`` is the true wall power (what the PDU outlet meter and the BMC see, component
    faults included); :attr:`board_power_w` is what the sensor board's channels read, sensor
    faults included. ``faults`` is the ground truth of what was injected.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    hosts: tuple[str, ...]
    rate_hz: float
    start_unix: float
    seed: int
    power_w: np.ndarray
    util: np.ndarray
    telemetry: dict[str, np.ndarray]
    meta: dict
    events: JobLog | None = None
    faults: tuple[FaultSpec, ...] = ()

    @property
    def board_power_w(self) -> np.ndarray:
        """(samples, components) W as the sensor board's channels read it: ``power_w`` under
        the sensor faults (offset, gain, stuck); ``power_w`` itself when there are none."""
        return board_view(self.faults, self.names, self.t_s, self.power_w)

    @property
    def t_s(self) -> np.ndarray:
        """Sample times (s after the start)."""
        return np.arange(len(self.power_w)) / self.rate_hz

    @property
    def total_w(self) -> np.ndarray:
        """Rack total power (W) per sample."""
        return self.power_w.sum(axis=1, dtype=np.float64)

    def current_a(self) -> np.ndarray:
        """(samples, components) current in A = power / (nominal_v * power_factor)."""
        return self.power_w / (self.meta["nominal_v"] * self.meta.get("power_factor", 1.0))

    def host_state(self, host: str, t_s: float) -> HostState:
        """Telemetry of ``host`` for the second containing ``t_s``."""
        h, row = self.hosts.index(host), math.floor(t_s)
        total, cpus = self.meta["mem_total_bytes"][h], self.meta["n_cpus"][h]
        values = [float(self.telemetry[f][row, h]) for f in TELEMETRY_FIELDS]
        return HostState(host, float(row), values[0], values[1], total, *values[2:], cpus)

    def save(self, folder: str | Path) -> Path:
        """Write ``rack_sim.npz`` and ``rack_sim.json`` into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"power_w": self.power_w, "util": self.util}
        arrays.update({f"telemetry_{f}": v for f, v in self.telemetry.items()})
        np.savez_compressed(folder / "rack_sim.npz", **arrays)
        start = dt.datetime.fromtimestamp(self.start_unix, dt.UTC).isoformat()
        side = dict(self.meta, format=FORMAT, names=list(self.names), kinds=list(self.kinds),
                    hosts=list(self.hosts), rate_hz=self.rate_hz, start_unix=self.start_unix,
                    start_iso=start, seed=self.seed, samples=len(self.power_w))
        (folder / "rack_sim.json").write_text(json.dumps(side, indent=1) + "\n")
        if self.events is not None:
            rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in row.items()} for row in self.events.to_rows()]
            (folder / JOBS_FILE).write_text(json.dumps(rows, indent=0) + "\n")
        faults = [f.as_dict() for f in self.faults]
        (folder / FAULTS_FILE).write_text(json.dumps(faults, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SimData:
        """Read what :meth:`save` wrote."""
        folder = Path(folder)
        side = json.loads((folder / "rack_sim.json").read_text())
        if side.get("format") != FORMAT:
            raise SimConfigError(f"{folder / 'rack_sim.json'}: format {side.get('format')!r}, "
                                 f"expected {FORMAT!r}")
        with np.load(folder / "rack_sim.npz") as npz:
            tele = {f: npz[f"telemetry_{f}"] for f in TELEMETRY_FIELDS}
            if f"telemetry_{APP_RATE_FIELD}" in npz.files:
                tele[APP_RATE_FIELD] = npz[f"telemetry_{APP_RATE_FIELD}"]
            power, util = npz["power_w"], npz["util"]
        keys = ("format", "names", "kinds", "hosts", "rate_hz", "start_unix", "start_iso",
                "seed", "samples")
        meta = {k: v for k, v in side.items() if k not in keys}
        return cls(tuple(side["names"]), tuple(side["kinds"]), tuple(side["hosts"]),
                   float(side["rate_hz"]), float(side["start_unix"]), int(side["seed"]),
                   power, util, tele, meta, _load_events(folder / JOBS_FILE),
                   _load_faults(folder / FAULTS_FILE))


def _load_events(path: Path) -> JobLog | None:
    """The job history saved beside a run (None values back to NaN), or None."""
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())
    return JobLog.from_rows([{k: (math.nan if v is None else v) for k, v in r.items()}
                             for r in rows])


def _load_faults(path: Path) -> tuple[FaultSpec, ...]:
    """The ground truth saved beside a run (none when the file is missing: an older run)."""
    if not path.is_file():
        return ()
    return tuple(FaultSpec.from_dict(d) for d in json.loads(path.read_text()))
