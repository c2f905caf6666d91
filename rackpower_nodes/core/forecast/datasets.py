"""Aligned power and telemetry series from every source the forecaster learns from.

The grid is global: step ``k`` of width ``step_s`` covers ``[k * step_s, (k + 1) * step_s)``
in Unix seconds (:func:`step_index`), so training data and the live predictor put a sample in
the same step. A series holds the mean power of each step; a run of samples is cut into
segments wherever consecutive samples are more than ``max_gap_steps`` steps apart, go back in
time, or (bags) the sensor board lost frames; steps between two close samples that got no
sample hold the previous step's mean. Nothing is ever interpolated across a gap.

Host telemetry (:data:`TELEMETRY`) is held from its message stamps (:func:`hold_telemetry`):
a step sees the newest message stamped in it or before it, NaN once that is older than 5 s.
Readers: :func:`from_sim`, :func:`from_bsc_csv`, :func:`from_plain_csv` (written by
:func:`write_plain_csv`) and :func:`from_bag` (rosbag2, sqlite3 or MCAP, through rosbags).
The message helpers (:func:`samples_power`, :func:`metrics_vector`, :class:`SequenceCheck`)
are shared with the live predictor, so both see the same numbers.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.core.schedule import WorkloadSchedule

__all__ = [
    "GRID_EPS", "TELEMETRY", "ComponentSeries", "DatasetError", "SequenceCheck", "estimate_spec",
    "lost_frames_tolerance_s",
    "from_bag", "from_bsc_csv", "from_plain_csv", "from_sim", "hold_telemetry",
    "message_typestore", "metrics_vector", "sample_times", "samples_power", "split_on_gaps",
    "stamp_unix", "step_index", "step_times", "write_plain_csv",
]

_log = logging.getLogger(__name__)

TELEMETRY = ("cpu_util", "mem_used_fraction", "net_rx_Bps", "net_tx_Bps", "disk_read_Bps",
             "disk_write_Bps")
GRID_EPS = 1e-4                 # steps: a sample this close below a step boundary counts as after
TELEMETRY_MAX_AGE_S = 5.0


class DatasetError(ValueError):
    """Unusable input data or arguments; the message names the file, field and value."""


def step_index(t_unix, step_s: float) -> np.ndarray:
    """Global step index (int64) of each time ``t_unix`` (Unix s) on the ``step_s`` grid."""
    return np.floor(np.asarray(t_unix, dtype=np.float64) / step_s + GRID_EPS).astype(np.int64)


def step_times(first_step: int, n: int, step_s: float) -> np.ndarray:
    """Start times (Unix s) of ``n`` steps from global step ``first_step``."""
    return (int(first_step) + np.arange(n, dtype=np.int64)) * float(step_s)


@dataclass
class ComponentSeries:
    """One component, one contiguous segment on the global grid.

    ``power_w`` (n,) float32: mean power (W) per step, step ``j`` starting at
    ``t0_unix + j * step_s`` (Unix s; ``t0_unix`` lies on the grid). ``telemetry`` (n, 6)
    float32: :data:`TELEMETRY` (fraction, fraction, then bytes/s), NaN where unknown.
    ``idle_w``/``max_w``: the component's spec (W), from config or :func:`estimate_spec`.
    """

    component: str
    t0_unix: float
    step_s: float
    power_w: np.ndarray
    telemetry: np.ndarray
    idle_w: float
    max_w: float
    schedule: WorkloadSchedule | None = None
    source: str = ""

    def __post_init__(self) -> None:
        where = f"series {self.component!r} ({self.source or 'no source'})"
        if not self.step_s > 0:
            raise DatasetError(f"{where}: step_s={self.step_s!r}, expected > 0 s")
        self.power_w = np.asarray(self.power_w, dtype=np.float32).reshape(-1)
        n = len(self.power_w)
        self.telemetry = np.asarray(self.telemetry, dtype=np.float32)
        if self.telemetry.shape != (n, len(TELEMETRY)):
            raise DatasetError(f"{where}: telemetry shape {self.telemetry.shape}, expected "
                               f"({n}, {len(TELEMETRY)})")
        if not np.isfinite(self.power_w).all():
            raise DatasetError(f"{where}: power_w has non-finite values")
        if not (math.isfinite(self.max_w) and self.max_w > 0 and 0 <= self.idle_w <= self.max_w):
            raise DatasetError(f"{where}: idle_w={self.idle_w!r}, max_w={self.max_w!r}, expected "
                               "0 <= idle_w <= max_w, max_w > 0 (W)")
        k = self.t0_unix / self.step_s
        if abs(k - round(k)) > 1e-3:
            raise DatasetError(f"{where}: t0_unix={self.t0_unix!r} is not on the "
                               f"{self.step_s} s grid")

    def __len__(self) -> int:
        return len(self.power_w)

    @property
    def first_step(self) -> int:
        """Global step index of step 0."""
        return round(self.t0_unix / self.step_s)

    @property
    def t_unix(self) -> np.ndarray:
        """(n,) start time of each step (Unix s)."""
        return step_times(self.first_step, len(self), self.step_s)


def split_on_gaps(t_unix, *arrays, step_s: float, max_gap_steps: float = 1.5) -> list[tuple]:
    """Cut samples into runs and resample each onto the grid by step means.

    A run ends where the next sample is more than ``max_gap_steps * step_s`` s later or not
    later at all (a back-jump). ``arrays`` are (n,) or (n, k) per sample; their means ignore
    NaN (NaN where a step has only NaN). Returns one tuple per run:
    ``(t0_unix, mean_1, mean_2, ...)`` with float64 (steps,) or (steps, k) arrays.
    """
    t = np.asarray(t_unix, dtype=np.float64).reshape(-1)
    if not step_s > 0:
        raise DatasetError(f"step_s={step_s!r}, expected > 0 s")
    arrays = [np.asarray(a) for a in arrays]
    bad = [a.shape for a in arrays if len(a) != len(t)]
    if bad:
        raise DatasetError(f"arrays of shapes {bad} do not match {len(t)} times")
    if not len(t):
        return []
    dt = np.diff(t)
    cuts = np.flatnonzero((dt > max_gap_steps * step_s) | ~(dt > 0)) + 1
    bounds = np.concatenate([[0], cuts, [len(t)]])
    bins = step_index(t, step_s)
    return [_resample(bins[a:b], [x[a:b] for x in arrays], step_s)
            for a, b in itertools.pairwise(bounds)]


def _resample(bins: np.ndarray, arrays: list[np.ndarray], step_s: float) -> tuple:
    rel = bins - bins[0]
    n = int(rel[-1]) + 1
    has = np.bincount(rel, minlength=n) > 0
    held = np.maximum.accumulate(np.where(has, np.arange(n), 0))   # empty step -> previous
    return (float(bins[0] * float(step_s)), *(_step_mean(rel, x, n)[held] for x in arrays))


def _step_mean(rel: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    out = np.empty((n, flat.shape[1]))
    for c in range(flat.shape[1]):
        ok = np.isfinite(flat[:, c])
        sums = np.bincount(rel, weights=np.where(ok, flat[:, c], 0.0), minlength=n)
        count = np.bincount(rel, weights=ok, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, c] = np.where(count > 0, sums / count, np.nan)
    return out.reshape((n,) + x.shape[1:])


def hold_telemetry(steps: np.ndarray, msg_t_unix, msg_values, step_s: float,
                   max_age_s: float = TELEMETRY_MAX_AGE_S) -> np.ndarray:
    """(n, 6) float32 telemetry for global ``steps``: the newest message stamped in the step
    or before it (zero-order hold), NaN when none or when it is more than ``max_age_s`` s
    (whole steps) older than the step."""
    out = np.full((len(steps), len(TELEMETRY)), np.nan, dtype=np.float32)
    t = np.asarray(msg_t_unix, dtype=np.float64).reshape(-1)
    if not len(t) or not len(steps):
        return out
    order = np.argsort(t, kind="stable")
    bins = step_index(t[order], step_s)
    values = np.asarray(msg_values, dtype=np.float32).reshape(len(t), -1)[order]
    i = np.searchsorted(bins, steps, side="right") - 1
    max_age = math.floor(max_age_s / step_s + GRID_EPS)
    ok = (i >= 0) & (steps - bins[np.maximum(i, 0)] <= max_age)
    out[ok] = values[i[ok]]
    return out


def metrics_vector(host) -> np.ndarray:
    """(6,) float64 :data:`TELEMETRY` from a ``rackpower/msg/HostMetrics`` (rclpy or rosbags
    object); all NaN when the host is stale."""
    if getattr(host, "stale", False):
        return np.full(len(TELEMETRY), np.nan)
    return np.array([host.cpu_util, host.mem_used_fraction, host.net_rx_bps, host.net_tx_bps,
                     host.disk_read_bps, host.disk_write_bps], dtype=np.float64)


def estimate_spec(power_w: np.ndarray) -> tuple[float, float]:
    """(idle_w, max_w) estimated from observed power (W): its 2nd and 99.9th percentiles."""
    p = np.asarray(power_w, dtype=np.float64)
    p = p[np.isfinite(p)]
    if not len(p):
        raise DatasetError("no finite power values to estimate idle_w/max_w from")
    idle, top = np.percentile(p, [2.0, 99.9])
    return float(max(idle, 0.0)), float(max(top, idle, 1e-3))


def _series(component: str, runs: list[tuple], step_s: float, spec: tuple[float, float],
            schedule: WorkloadSchedule | None, source: str) -> list[ComponentSeries]:
    """ComponentSeries from split_on_gaps runs of (t0, power, telemetry)."""
    return [ComponentSeries(component, t0, step_s, p, tel, spec[0], spec[1], schedule, source)
            for t0, p, tel in runs]


def from_sim(folder_or_simdata, step_s: float = 0.1) -> list[ComponentSeries]:
    """Series from a simulator run (:class:`~rackpower_nodes.sim.rack_sim.SimData` or a
    folder it was saved to): power at ``rate_hz`` as step means, telemetry rows (means over
    each second) stamped at the end of their second and held. idle/max (W) from the model's
    curve in the run's config, else estimated."""
    from rackpower_nodes.sim.rack_sim import SimData

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
    out: list[ComponentSeries] = []
    for i, name in enumerate(data.names):
        values = _sim_host_telemetry(data, name, seconds)
        spec = specs[i] or estimate_spec(data.power_w[:, i])
        for t0, p in split_on_gaps(t, data.power_w[:, i], step_s=step_s):
            steps = step_index(t0, step_s) + np.arange(len(p))
            tel = hold_telemetry(steps, tele_t, values, step_s)
            out.append(ComponentSeries(name, t0, step_s, p, tel, *spec, schedule, source))
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
    from rackpower_nodes.sim import rack_model as rm

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
            out.append((lo, hi))
        except (KeyError, TypeError, rm.SimConfigError) as exc:
            _log.warning("no spec for %s model %r in the run's config (%s); estimating",
                         kind, model, exc)
            out.append(None)
    return out


_BSC_TELEMETRY = ("cpu_idle", None, "bytes_in", "bytes_out", "bytes_read", "bytes_written")


def from_bsc_csv(path: str | Path, step_s: float = 2.0, idle_w: float | None = None,
                 max_w: float | None = None) -> list[ComponentSeries]:
    """Series from a BSC power-modelling CSV (``timestamp`` Unix s, ``powerWatts`` W).

    Telemetry: cpu_util = 1 - cpu_idle/100; memory fraction NaN (the files have no total);
    bytes_in/out, bytes_read/written are Ganglia rates in bytes/s. The file's concatenated
    runs are split at back-jumps and gaps. Component name ``<server folder>/<file stem>``.
    """
    path = Path(path)
    with path.open(newline="") as fh:
        header = [h.strip() for h in next(csv.reader(fh), [])]
    missing = [c for c in ("timestamp", "powerWatts") if c not in header]
    if missing:
        raise DatasetError(f"{path}: columns {missing} missing, expected the BSC format")
    wanted = ["timestamp", "powerWatts"] + [c for c in _BSC_TELEMETRY if c in header]
    data = np.genfromtxt(path, delimiter=",", skip_header=1, ndmin=2,
                         usecols=[header.index(c) for c in wanted])
    col = {c: data[:, k] for k, c in enumerate(wanted)}
    nan = np.full(len(data), np.nan)
    tel = np.column_stack([col.get(c, nan) if c else nan for c in _BSC_TELEMETRY])
    tel[:, 0] = np.clip(1.0 - tel[:, 0] / 100.0, 0.0, 1.0)
    keep = np.isfinite(col["timestamp"]) & np.isfinite(col["powerWatts"])
    if keep.sum() < 2:
        raise DatasetError(f"{path}: {int(keep.sum())} rows with time and power, expected >= 2")
    power = col["powerWatts"][keep]
    est = estimate_spec(power)
    spec = (est[0] if idle_w is None else idle_w, est[1] if max_w is None else max_w)
    runs = split_on_gaps(col["timestamp"][keep], power, tel[keep], step_s=step_s)
    name = f"{path.parent.name}/{path.stem}"
    _log.info("%s: %d rows -> %d segments", path, int(keep.sum()), len(runs))
    return _series(name, runs, step_s, spec, None, str(path))


PLAIN_HEADER = ("time_s", "component", "power_w")


def from_plain_csv(path: str | Path, step_s: float,
                   specs: Mapping[str, tuple[float, float]] | None = None,
                   schedule: WorkloadSchedule | None = None) -> list[ComponentSeries]:
    """Series from the plain CSV format (docs/forecast-data.md): header
    ``time_s,component,power_w`` then any of :data:`TELEMETRY`; ``time_s`` in Unix s, power
    in W; empty cells or ``nan`` are unknown. Rows of one component keep their file order
    (split at back-jumps and gaps). ``specs`` maps component -> (idle_w, max_w), else
    estimated."""
    path = Path(path)
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    extra = _plain_columns(path, [h.strip() for h in rows[0]] if rows else [])
    body = [r for r in rows[1:] if r]
    if any(len(r) != 3 + len(extra) for r in body):
        line = 2 + next(i for i, r in enumerate(body) if len(r) != 3 + len(extra))
        raise DatasetError(f"{path}: a row near line {line} has a different number of cells "
                           f"than the header ({3 + len(extra)})")
    comps = np.array([r[1] for r in body], dtype=object)
    values = _floats(path, [[r[0], r[2], *r[3:]] for r in body], 2 + len(extra))
    tel = np.full((len(body), len(TELEMETRY)), np.nan)
    for k, name in enumerate(extra):
        tel[:, TELEMETRY.index(name)] = values[:, 2 + k]
    out: list[ComponentSeries] = []
    for name in dict.fromkeys(comps):
        rows_c = (comps == name) & np.isfinite(values[:, 1]) & np.isfinite(values[:, 0])
        if not rows_c.any():
            _log.warning("%s: component %r has no row with a finite time and power", path, name)
            continue
        power = values[rows_c, 1]
        spec = (specs or {}).get(name) or estimate_spec(power)
        runs = split_on_gaps(values[rows_c, 0], power, tel[rows_c], step_s=step_s)
        out.extend(_series(name, runs, step_s, spec, schedule, str(path)))
    return out


def _plain_columns(path: Path, header: list[str]) -> list[str]:
    """The telemetry columns of a plain CSV header; DatasetError for a bad header."""
    extra = header[3:]
    bad = [c for c in extra if c not in TELEMETRY] + sorted({c for c in extra
                                                             if extra.count(c) > 1})
    if tuple(header[:3]) != PLAIN_HEADER or bad:
        raise DatasetError(f"{path}: header {header}, expected time_s,component,power_w then "
                           f"any of {list(TELEMETRY)} once each (bad: {bad})")
    return extra


def _floats(path: Path, cells: list[list[str]], width: int) -> np.ndarray:
    """(rows, width) float64 from CSV cells; empty cells are NaN."""
    text = np.array(cells, dtype=str).reshape(len(cells), width)
    text = np.char.strip(text)
    text[text == ""] = "nan"
    try:
        return text.astype(np.float64)
    except ValueError as exc:
        raise DatasetError(f"{path}: a numeric cell is not a number ({exc})") from exc


def write_plain_csv(path: str | Path, series: Sequence[ComponentSeries]) -> Path:
    """Write ``series`` in the plain CSV format, one row per step (time = step start, Unix
    s, to the microsecond; values with float32 precision, ``nan`` where unknown)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        fh.write(",".join(PLAIN_HEADER + TELEMETRY) + "\n")
        for s in series:
            quoted = '"' + s.component.replace('"', '""') + '"'
            fmt = "%.6f," + quoted.replace("%", "%%") + ",%.9g" * (1 + len(TELEMETRY))
            table = np.column_stack([s.t_unix, s.power_w, s.telemetry]).astype(np.float64)
            np.savetxt(fh, table, fmt=fmt)
    return path


def stamp_unix(stamp) -> float:
    """A ``builtin_interfaces/Time`` (``sec``, ``nanosec``) as Unix seconds."""
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def sample_times(t0_unix: float, period_s: float, n: int) -> np.ndarray:
    """(n,) times (Unix s) of the samples of one batch: ``t0 + i * period``."""
    return float(t0_unix) + np.arange(n, dtype=np.float64) * float(period_s)


def samples_power(msg) -> tuple[float, float, list[str], np.ndarray]:
    """``(t0_unix, sample_period_s, channel_ids, power_w)`` of a ``rackpower/msg/PowerSamples``:
    power (channels, samples) float64 = current_a (channel-major) * the channel's voltage_v."""
    ids, n = list(msg.channel_ids), int(msg.sample_count)
    current = np.asarray(msg.current_a, dtype=np.float64)
    volts = np.asarray(msg.voltage_v, dtype=np.float64)
    if current.size != len(ids) * n or volts.size != len(ids):
        raise DatasetError(f"PowerSamples: {current.size} currents and {volts.size} voltages for "
                           f"{len(ids)} channels x {n} samples")
    power = current.reshape(len(ids), n) * volts[:, None]
    return stamp_unix(msg.header.stamp), float(msg.sample_period_s), ids, power


def lost_frames_tolerance_s(step_s: float) -> float:
    """Frames lost for less than half a model step leave the step mean usable, s."""
    return 0.5 * step_s


class SequenceCheck:
    """Says whether a PowerSamples batch follows the previous one closely enough.

    A loss shorter than ``tolerance_s`` (a few corrupt frames inside one model step, whose
    step mean the rest of the step still gives) is not a break; a longer one is, and so is a
    sequence that goes back (a restarted sensor node or board).
    """

    def __init__(self, tolerance_s: float = 0.0) -> None:
        self.expected: int | None = None
        self.tolerance_s = float(tolerance_s)

    def is_break(self, first_sequence: int, sample_count: int, frames_lost: int = 0,
                 sample_period_s: float = 0.0) -> bool:
        """True when more than ``tolerance_s`` of frames were lost before this batch, or
        ``first_sequence`` went back."""
        jump = 0 if self.expected is None else int(first_sequence) - self.expected
        missing = max(int(frames_lost), jump)
        brk = jump < 0 or (missing > 0 and missing * sample_period_s >= self.tolerance_s)
        self.expected = int(first_sequence) + int(sample_count)
        return brk


def _msg_folder() -> Path:
    import sys

    for folder in (Path(__file__).resolve().parents[3] / "msg",
                   Path(sys.prefix) / "share" / "rackpower" / "msg"):
        if (folder / "PowerSamples.msg").is_file():
            return folder
    raise DatasetError("rackpower msg/*.msg not found beside the checkout or in "
                       f"{sys.prefix}/share/rackpower/msg")


def message_typestore():
    """A rosbags typestore: std_msgs of ROS 2 Kilted (Humble where rosbags lacks it) plus
    rackpower's HostMetrics, HostTelemetry and PowerSamples from their .msg text."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.ROS2_HUMBLE))
    folder, types = _msg_folder(), {}
    for name in ("HostMetrics", "HostTelemetry", "PowerSamples"):
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(),
                                        f"rackpower/msg/{name}"))
    store.register(types)
    return store


POWER_TYPE, TELEMETRY_TYPE = "rackpower/msg/PowerSamples", "rackpower/msg/HostTelemetry"


def from_bag(path: str | Path, step_s: float = 0.1, namespace: str | None = None,
             specs: Mapping[str, tuple[float, float]] | None = None,
             schedule: WorkloadSchedule | None = None) -> list[ComponentSeries]:
    """Series from a rosbag2 bag (sqlite3 or MCAP) with ``/<ns>/power_samples`` and
    ``/<ns>/host_telemetry``. Each channel is one component; a batch after lost frames or a
    sequence jump starts a new segment, as does a time gap. Host telemetry is matched by
    ``host_id`` == component id. ``namespace`` picks one rack when the bag holds several."""
    from rosbags.highlevel import AnyReaderError

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"bag {path} does not exist")
    try:
        pieces, tele = _read_bag(path, namespace, lost_frames_tolerance_s(step_s))
    except AnyReaderError as exc:
        raise DatasetError(f"bag {path}: {exc}") from exc
    out: list[ComponentSeries] = []
    for name, chunks in pieces.items():
        out.extend(_bag_component(name, chunks, tele.get(name, []), step_s, specs, schedule,
                                  str(path)))
    return out


def _read_bag(path: Path, namespace: str | None, tolerance_s: float) -> tuple[dict, dict]:
    """Per component: power chunks ``(piece, t, power)`` (a new piece after every sequence
    break) and telemetry ``(t, values)``, in bag order."""
    from rosbags.highlevel import AnyReader

    pieces: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    tele: dict[str, list[tuple[float, np.ndarray]]] = {}
    check, piece = SequenceCheck(tolerance_s), 0
    with AnyReader([path], default_typestore=message_typestore()) as reader:
        for conn, _, raw in reader.messages(connections=_bag_topics(reader, namespace, path)):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype == TELEMETRY_TYPE:
                t = stamp_unix(msg.header.stamp)
                for host in msg.hosts:
                    tele.setdefault(host.host_id, []).append((t, metrics_vector(host)))
                continue
            piece += check.is_break(msg.first_sequence, msg.sample_count, msg.frames_lost,
                                    msg.sample_period_s)
            t0, period, ids, power = samples_power(msg)
            t = sample_times(t0, period, power.shape[1])
            for c, name in enumerate(ids):
                pieces.setdefault(name, []).append((piece, t, power[c]))
    return pieces, tele


def _bag_topics(reader, namespace: str | None, path: Path) -> list:
    """The PowerSamples connections of one rack and its HostTelemetry connections."""
    def pick(msgtype: str, base: str) -> list:
        found = [c for c in reader.connections if c.msgtype == msgtype]
        if namespace is not None:
            want = "/" + "/".join(p for p in (namespace.strip("/"), base) if p)
            found = [c for c in found if c.topic == want]
        return found

    power = pick(POWER_TYPE, "power_samples")
    topics = sorted({c.topic for c in power})
    if len(topics) != 1:
        seen = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
        raise DatasetError(f"bag {path}: PowerSamples topics {topics} for namespace "
                           f"{namespace!r}, expected exactly one (topics: {seen}); pass "
                           "namespace= to choose a rack")
    prefix = topics[0].rsplit("/", 1)[0]
    tele = [c for c in pick(TELEMETRY_TYPE, "host_telemetry")
            if c.topic.rsplit("/", 1)[0] == prefix]
    return power + tele


def _bag_component(name: str, chunks: list, tele: list, step_s: float,
                   specs: Mapping | None, schedule: WorkloadSchedule | None,
                   source: str) -> list[ComponentSeries]:
    ids = np.array([c[0] for c in chunks])
    t_all = np.concatenate([c[1] for c in chunks])
    p_all = np.concatenate([c[2] for c in chunks])
    piece_of = np.repeat(ids, [len(c[1]) for c in chunks])
    spec = (specs or {}).get(name) or estimate_spec(p_all)
    msg_t = np.array([m[0] for m in tele], dtype=np.float64)
    msg_v = np.array([m[1] for m in tele]).reshape(len(tele), len(TELEMETRY))
    out: list[ComponentSeries] = []
    for k in dict.fromkeys(ids.tolist()):
        sel = (piece_of == k) & np.isfinite(p_all)
        for t0, p in split_on_gaps(t_all[sel], p_all[sel], step_s=step_s):
            steps = step_index(t0, step_s) + np.arange(len(p))
            tel = hold_telemetry(steps, msg_t, msg_v, step_s)
            out.append(ComponentSeries(name, t0, step_s, p, tel, *spec, schedule, source))
    return out
