"""Rack simulator: configuration, the block generator, live use and fast-mode files.

:func:`load_config` parses and validates ``config/rack_sim.yaml``. :class:`RackSimulator`
serves a live driver (:meth:`~RackSimulator.step`, :meth:`~RackSimulator.state_at`,
:meth:`~RackSimulator.current_source` for the sensor-board emulator,
:meth:`~RackSimulator.host_state`); :func:`generate` produces days of data at once as a
:class:`SimData`, saved as compressed ``.npz`` plus a JSON sidecar (layout below).

Both paths run the same engine: time advances in blocks of whole seconds, every component
draws from generators seeded by ``SeedSequence([seed, component index])``, and filter state is
carried from block to block, so a seed always gives the same samples.

Files written by :meth:`SimData.save` into a folder:

- ``rack_sim.npz`` (``numpy.savez_compressed``): ``power_w`` float32 (samples, components),
  wall power in W at ``t = k / rate_hz`` s after the start; ``util`` float32 (samples,
  components), utilisation 0..1 (servers: CPU, storage: IO, switches: traffic); and for each
  field of :data:`~rackpower_nodes.sim.workload.TELEMETRY_FIELDS` a float32 array
  ``telemetry_<field>`` (seconds, hosts), the mean over ``[s, s + 1)`` s.
- ``rack_sim.json``: ``format``, ``names``, ``kinds``, ``hosts``, ``rate_hz``, ``start_unix``,
  ``start_iso``, ``seed``, ``hours``, electrical limits (``nominal_v``, ``breaker_a``,
  ``breaker_w``, ``derating``, ``budget_w``), ``pdu_outlets`` and the full ``config``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rackpower_nodes.core.schedule import ScheduleError, WorkloadSchedule
from rackpower_nodes.sim.rack_model import (
    Dynamics,
    PowerStream,
    PsuCurve,
    ServerModel,
    SimConfigError,
    StorageModel,
    SwitchModel,
    cfg_float,
    cfg_map,
)
from rackpower_nodes.sim.workload import (
    STORAGE_TELEMETRY,
    TELEMETRY_FIELDS,
    TelemetryShape,
    TelemetryStream,
    TraceReplay,
    WorkloadProfile,
    WorkloadStream,
    load_trace,
)

__all__ = [
    "DEFAULT_CONFIG", "ComponentSpec", "HostState", "RackConfig", "RackSimulator", "RackState",
    "SimConfigError", "SimData", "generate", "load_config",
]

FORMAT = "rackpower-sim/1"

_log = logging.getLogger(__name__)


def _default_config() -> Path:
    """The checkout's config/rack_sim.yaml, else the installed share/rackpower copy."""
    checkout = Path(__file__).resolve().parents[2] / "config" / "rack_sim.yaml"
    installed = Path(sys.prefix) / "share" / "rackpower" / "config" / "rack_sim.yaml"
    return installed if not checkout.is_file() and installed.is_file() else checkout


DEFAULT_CONFIG = _default_config()
KINDS = {"server": "server_models", "switch": "switch_models", "storage": "storage_models"}


@dataclass(frozen=True)
class ComponentSpec:
    """One rack component; ``model`` is a Server/Switch/StorageModel of its ``kind``."""

    index: int
    name: str
    kind: str
    model: ServerModel | SwitchModel | StorageModel
    pdu: str
    outlet: int
    workload: WorkloadProfile | None = None
    trace: TraceReplay | None = None

    @property
    def is_host(self) -> bool:
        """Servers and storage nodes have host telemetry; switches do not."""
        return self.kind != "switch"


@dataclass(frozen=True)
class RackConfig:
    """A validated rack: electrical limits (A, V, W), components, schedule and dynamics."""

    raw: Mapping
    seed: int
    start_unix: float
    rate_hz: int
    nominal_v: float
    power_factor: float
    breaker_a: float
    derating: float
    components: tuple[ComponentSpec, ...]
    schedule: WorkloadSchedule
    dynamics: Mapping[str, Dynamics]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components if c.is_host)

    @property
    def breaker_w(self) -> float:
        """Breaker rating as power (W): breaker_a * nominal_v * power_factor."""
        return self.breaker_a * self.nominal_v * self.power_factor

    @property
    def budget_w(self) -> float:
        """Derated continuous budget (W): breaker_w * derating."""
        return self.breaker_w * self.derating

    def meta(self) -> dict:
        """JSON-friendly facts that travel with generated data."""
        return {"nominal_v": self.nominal_v, "power_factor": self.power_factor,
                "breaker_a": self.breaker_a, "derating": self.derating,
                "breaker_w": self.breaker_w, "budget_w": self.budget_w,
                "tz_offset_s": self.schedule.tz_offset_s,
                "pdu_outlets": [[c.pdu, c.outlet] for c in self.components],
                "models": [c.model.name for c in self.components],
                "mem_total_bytes": [c.model.host.mem_total_bytes
                                    for c in self.components if c.is_host],
                "n_cpus": [c.model.host.n_cpus for c in self.components if c.is_host]}


def load_config(source: str | Path | Mapping | RackConfig | None = None) -> RackConfig:
    """Parse and validate a rack config (YAML path, mapping, or an already parsed config).

    Relative trace paths resolve against the YAML file's folder (the working folder for a
    mapping). Raises :class:`SimConfigError` naming the offending key.
    """
    if isinstance(source, RackConfig):
        return source
    base = Path.cwd()
    if source is None or isinstance(source, (str, Path)):
        path = Path(source) if source is not None else DEFAULT_CONFIG
        with path.open() as fh:
            source = yaml.safe_load(fh)
        base = path.resolve().parent
    raw = cfg_map(source, "config")
    try:
        return _parse(raw, base)
    except ScheduleError as exc:
        raise SimConfigError(str(exc)) from exc


def _parse(raw: Mapping, base: Path) -> RackConfig:
    rack = cfg_map(raw.get("rack"), "rack")
    rate = cfg_float(raw, "rate_hz", "", 10.0, 1.0, 1000.0, "Hz")
    if rate != int(rate):
        raise SimConfigError(f"rate_hz: {rate!r}, expected a whole number of samples per s")
    seed = _check_seed(raw.get("seed", 0))
    schedule = WorkloadSchedule.from_config(raw)
    curves = {name: PsuCurve.from_config(name, v, f"psu_curves.{name}")
              for name, v in cfg_map(raw.get("psu_curves", {}), "psu_curves").items()}
    models = _parse_models(raw, curves)
    dyn_raw = cfg_map(raw.get("dynamics", {}), "dynamics")
    dynamics = {k: Dynamics.from_config(dyn_raw.get(k), f"dynamics.{k}") for k in KINDS}
    components = _parse_components(raw, rack, models, base)
    hosts = {c.name for c in components if c.is_host}
    for i, job in enumerate(schedule.jobs):
        unknown = sorted(set(job.hosts) - hosts)
        if unknown:
            raise SimConfigError(f"schedule.jobs[{i}].hosts: {unknown} are not server or "
                                 f"storage components (known: {sorted(hosts)})")
    return RackConfig(
        raw, seed, _start_unix(raw.get("start", "2024-03-04T00:00:00Z")), int(rate),
        cfg_float(rack, "nominal_v", "rack", 230.0, 1.0, 1000.0, "V"),
        cfg_float(rack, "power_factor", "rack", 1.0, 0.1, 1.0),
        cfg_float(rack, "breaker_a", "rack", None, 1e-3, 1e4, "A"),
        cfg_float(rack, "derating", "rack", 0.8, 0.01, 1.0),
        tuple(components), schedule, dynamics)


def _start_unix(value) -> float:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise SimConfigError(f"start: {value!r}, expected an ISO 8601 time") from exc
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise SimConfigError(f"start: {value!r}, expected an ISO 8601 time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _parse_models(raw: Mapping, curves: Mapping) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for kind, section in KINDS.items():
        entries = cfg_map(raw.get(section, {}), section)
        if kind == "server":
            out[kind] = {n: ServerModel.from_config(n, v, f"{section}.{n}", curves)
                         for n, v in entries.items()}
        else:
            cls = SwitchModel if kind == "switch" else StorageModel
            out[kind] = {n: cls.from_config(n, v, f"{section}.{n}") for n, v in entries.items()}
    return out


def _parse_components(raw: Mapping, rack: Mapping, models: dict, base: Path):
    pdus = cfg_map(rack.get("pdus"), "rack.pdus")
    outlets = {name: int(cfg_float(cfg_map(v, f"rack.pdus.{name}"), "outlets",
                                   f"rack.pdus.{name}", None, 1, 512)) for name, v in pdus.items()}
    workloads = cfg_map(raw.get("workloads", {}), "workloads")
    items = raw.get("components")
    if not isinstance(items, list) or not items:
        raise SimConfigError(f"components: {items!r}, expected a non-empty list")
    out, used = [], {}
    for i, item in enumerate(items):
        key = f"components[{i}]"
        item = cfg_map(item, key)
        name, kind = item.get("name"), item.get("kind")
        if not isinstance(name, str) or not name or name in [c.name for c in out]:
            raise SimConfigError(f"{key}.name: {name!r}, expected a unique non-empty name")
        if kind not in KINDS:
            raise SimConfigError(f"{key}.kind: {kind!r}, expected one of {sorted(KINDS)}")
        model = item.get("model")
        if model not in models[kind]:
            raise SimConfigError(f"{key}.model: {model!r} is not a key of {KINDS[kind]} "
                                 f"(known: {sorted(models[kind])})")
        pdu, outlet = item.get("pdu"), item.get("outlet")
        if pdu not in outlets:
            raise SimConfigError(f"{key}.pdu: {pdu!r} is not one of rack.pdus {sorted(outlets)}")
        if isinstance(outlet, bool) or not isinstance(outlet, int) \
                or not 1 <= outlet <= outlets[pdu]:
            raise SimConfigError(f"{key}.outlet: {outlet!r}, expected 1..{outlets[pdu]}")
        if (pdu, outlet) in used:
            raise SimConfigError(f"{key}.outlet: {pdu} outlet {outlet} is already used by "
                                 f"{used[(pdu, outlet)]}")
        used[(pdu, outlet)] = name
        trace = load_trace(item["trace"], f"{key}.trace", base) if "trace" in item else None
        profile = None
        if kind != "switch" and trace is None:
            wl = item.get("workload")
            if wl not in workloads:
                raise SimConfigError(f"{key}.workload: {wl!r} is not a key of workloads "
                                     f"(known: {sorted(workloads)})")
            profile = WorkloadProfile.from_config(workloads[wl], f"workloads.{wl}")
        out.append(ComponentSpec(i, name, kind, models[kind][model], pdu, outlet, profile,
                                 trace))
    return out


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
    1 Hz, and ``meta`` (electrical limits, config)."""

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
            power, util = npz["power_w"], npz["util"]
        keys = ("format", "names", "kinds", "hosts", "rate_hz", "start_unix", "start_iso",
                "seed", "samples")
        meta = {k: v for k, v in side.items() if k not in keys}
        return cls(tuple(side["names"]), tuple(side["kinds"]), tuple(side["hosts"]),
                   float(side["rate_hz"]), float(side["start_unix"]), int(side["seed"]),
                   power, util, tele, meta)


@dataclass(frozen=True)
class _Block:
    power_w: np.ndarray        # (n, m) W
    util: np.ndarray           # (n, m) 0..1
    telemetry: dict            # field -> (seconds, hosts)


class _Engine:
    """Generates the rack block by block from t = 0 (samples at k / rate_hz s)."""

    def __init__(self, cfg: RackConfig, seed: int, rate_hz: int):
        self.cfg, self.rate = cfg, int(rate_hz)
        self.dt = 1.0 / self.rate
        self.samples = 0
        self._streams = [self._streams_for(c, seed) for c in cfg.components]
        self._switches = [c for c in cfg.components if c.kind == "switch"]

    def _streams_for(self, comp: ComponentSpec, seed: int) -> dict:
        gens = [np.random.default_rng(s)
                for s in np.random.SeedSequence([seed, comp.index]).spawn(7)]
        model, out = comp.model, {}
        if comp.is_host:
            shape = STORAGE_TELEMETRY if comp.kind == "storage" else TelemetryShape()
            out["telemetry"] = TelemetryStream(model.host, shape, gens[6])
            if comp.trace is None:
                out["workload"] = WorkloadStream(comp.name, comp.workload, self.cfg.schedule,
                                                 self.dt, gens[:4])
        swing = (model.curve.points_w[-1] - model.curve.points_w[0]
                 if comp.kind == "server" else 0.0)
        out["power"] = PowerStream(model.steady_power_w, swing, self.cfg.dynamics[comp.kind],
                                   self.dt, gens[4], gens[5])
        return out

    def block(self, seconds: int) -> _Block:
        """The next ``seconds`` s of samples: hosts first, then the switches they load."""
        n, m = seconds * self.rate, len(self.cfg.components)
        t_s = (self.samples + np.arange(n)) * self.dt
        power, util = np.empty((n, m)), np.empty((n, m))
        tele: dict[str, list] = {f: [] for f in TELEMETRY_FIELDS}
        traffic = np.zeros(n)
        for comp in self.cfg.components:
            if comp.is_host:
                traffic += self._host(comp, t_s, power, util, tele)
        share = 1.0 / max(1, len(self._switches))
        for comp in self._switches:
            gbps = traffic * share * 8e-9
            util[:, comp.index] = np.clip(gbps / comp.model.capacity_gbps, 0.0, 1.0)
            power[:, comp.index] = self._power(comp, t_s, util[:, comp.index])
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
        power[:, i] = self._power(comp, t_s, util[:, i])
        per_second = util[:, i].reshape(-1, self.rate).mean(axis=1)
        for f, values in streams["telemetry"].block(per_second).items():
            tele[f].append(values)
        return streams["telemetry"].mean_traffic_bytes_per_s(util[:, i])

    def _power(self, comp: ComponentSpec, t_s: np.ndarray, util: np.ndarray) -> np.ndarray:
        if comp.trace is not None:
            return comp.trace.power_at(t_s)
        return self._streams[comp.index]["power"].block(util)


def generate(hours: float, seed: int | None = None, rate_hz: int | None = None,
             config: str | Path | Mapping | RackConfig | None = None,
             block_s: int = 3600) -> SimData:
    """Simulate ``hours`` h from the config's start (fast mode); same seed, same data."""
    cfg = load_config(config)
    seed = _check_seed(cfg.seed if seed is None else seed)
    rate = _check_rate(cfg.rate_hz if rate_hz is None else rate_hz)
    total_s = round(hours * 3600.0)
    if total_s < 1:
        raise SimConfigError(f"hours: {hours!r}, expected at least 1 s of simulation")
    engine = _Engine(cfg, seed, rate)
    m, hosts = len(cfg.components), len(cfg.hosts)
    power = np.empty((total_s * rate, m), dtype=np.float32)
    load = np.empty_like(power)
    tele = {f: np.empty((total_s, hosts), dtype=np.float32) for f in TELEMETRY_FIELDS}
    done = 0
    while done < total_s:
        secs = min(block_s, total_s - done)
        blk = engine.block(secs)
        power[done * rate:(done + secs) * rate] = blk.power_w
        load[done * rate:(done + secs) * rate] = blk.util
        for f in TELEMETRY_FIELDS:
            tele[f][done:done + secs] = blk.telemetry[f]
        done += secs
    _log.info("generated %d s x %d components at %d Hz (seed %d)", total_s, m, rate, seed)
    return SimData(cfg.names, tuple(c.kind for c in cfg.components), cfg.hosts, float(rate),
                   cfg.start_unix, seed, power, load, tele,
                   dict(cfg.meta(), hours=total_s / 3600.0, config=_jsonable(cfg.raw)))


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimConfigError(f"seed: {seed!r}, expected an integer >= 0")
    return int(seed)


def _check_rate(rate_hz) -> int:
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float)) \
            or rate_hz != int(rate_hz) or not 1 <= rate_hz <= 1000:
        raise SimConfigError(f"rate_hz: {rate_hz!r}, expected a whole number of Hz in 1..1000")
    return int(rate_hz)


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


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
    """

    def __init__(self, config: str | Path | Mapping | RackConfig | None = None,
                 seed: int | None = None, rate_hz: int | None = None,
                 history_s: float = 600.0, block_s: int = 10):
        self.config = load_config(config)
        self.seed = _check_seed(self.config.seed if seed is None else seed)
        self.rate_hz = _check_rate(self.config.rate_hz if rate_hz is None else rate_hz)
        self._engine = _Engine(self.config, self.seed, self.rate_hz)
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
        """Fast mode with this simulator's config, seed and rate (live state untouched)."""
        return generate(hours, self.seed, self.rate_hz, self.config)

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
            t = np.asarray(t_s, dtype=np.float64)
            out = np.zeros((t.size, channels))
            if board.size:
                out[:, board] = self.current_at(t0_s + t)[:, cols[board]]
            return out

        return source

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
