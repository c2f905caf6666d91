"""Training data from CSV files: BSC power-modelling traces and the plain CSV format.

:func:`from_bsc_csv` reads one BSC trace (``timestamp`` Unix s, ``powerWatts`` W and Ganglia
host counters); :func:`from_plain_csv` reads, and :func:`write_plain_csv` writes, the plain
format ``time_s,component,power_w`` plus any of the telemetry columns (docs/forecast-data.md).
Both return :class:`~rackpower_nodes.core.forecast.series.ComponentSeries`, cut at back-jumps
and gaps; bad files raise :class:`~rackpower_nodes.core.forecast.series.DatasetError` naming
the file and what is wrong.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rackpower_nodes.core.forecast.series import (
    TELEMETRY,
    ComponentSeries,
    DatasetError,
    estimate_spec,
    split_on_gaps,
)
from rackpower_nodes.core.schedule import WorkloadSchedule

__all__ = ["PLAIN_HEADER", "from_bsc_csv", "from_plain_csv", "write_plain_csv"]

_log = logging.getLogger(__name__)


def _series(component: str, runs: list[tuple], step_s: float, spec: tuple[float, float],
            schedule: WorkloadSchedule | None, source: str) -> list[ComponentSeries]:
    """ComponentSeries from split_on_gaps runs of (t0, power, telemetry)."""
    return [ComponentSeries(component, t0, step_s, p, tel, spec[0], spec[1], schedule, source)
            for t0, p, tel in runs]


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
