"""Rack simulator configuration: ``config/rack_sim.yaml`` parsed into a checked `RackConfig`.

:func:`load_config` reads the YAML (or takes a mapping) and checks every key, raising
:class:`~rackpower_nodes.sim.rack_model.SimConfigError` naming the offending one; the
electrical limits are in A, V and W. The seed and rate checks and :func:`_jsonable` (the config
as JSON for a data file's sidecar) serve the generator and the live simulator too.
"""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rackpower_nodes.core.schedule import ScheduleError, WorkloadSchedule
from rackpower_nodes.sim.rack_model import (
    Dynamics,
    PsuCurve,
    ServerModel,
    SimConfigError,
    StorageModel,
    SwitchModel,
    cfg_float,
    cfg_map,
)
from rackpower_nodes.sim.scheduler import SchedulerConfig, parse_scheduler
from rackpower_nodes.sim.workload import TraceReplay, WorkloadProfile, load_trace


def _default_config(rel: str = "rack_sim.yaml") -> Path:
    """The checkout's config/<rel>, else the installed share/rackpower copy."""
    checkout = Path(__file__).resolve().parents[3] / "config" / rel
    installed = Path(sys.prefix) / "share" / "rackpower" / "config" / rel
    return installed if not checkout.is_file() and installed.is_file() else checkout


DEFAULT_CONFIG = _default_config()
#: Shipped rack configs by preset name: the office day (default), an AI training and inference
#: rack, and a mixed one (GPU servers beside office CPU servers).
PRESETS = {"office": DEFAULT_CONFIG, "ai": _default_config("sim_presets/ai.yaml"),
           "mixed": _default_config("sim_presets/mixed.yaml")}


def preset_config(name: str) -> Path:
    """The config file of preset ``name`` (a key of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise SimConfigError(f"preset: {name!r}, expected one of {sorted(PRESETS)}")
    return PRESETS[name]
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
    scheduler: SchedulerConfig | None = None

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
        tuple(components), schedule, dynamics,
        parse_scheduler(raw.get("scheduler"), [c.name for c in components if c.is_host]))


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
