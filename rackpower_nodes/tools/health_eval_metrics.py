"""Scores of ``rackpower-health-eval``: injected faults against the monitor's fault verdicts.

Per injected fault (:func:`score_day`): detected when a ``fault`` verdict on its component
comes at or after its onset and no later than when it would trip or stop the component
(``failure_s``) or the end of the monitored run; the delay is from the onset to that first
fault verdict, the lead time from it to ``failure_s`` (NaN for a fault that never trips);
the cause is right when that first fault verdict names the injected kind, the sensor-vs-
component decision when its ``sensor_fault`` equals the fault's ``is_sensor``. A transition
into fault on a component before its fault's onset, or on a component with no fault, is a
false alarm.

:func:`class_rows` summarises outcomes per fault class (and preset), :func:`alarm_row` the
false alarms of a monitored span per rack-week.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rackpower_nodes.core.health import FAULT_CLASSES
from rackpower_nodes.tools.health_eval_data import FaultMark

__all__ = ["DONE_WHEN", "FaultOutcome", "alarm_row", "class_rows", "score_day"]

#: the issue's Done-when per fault class: detected %, right cause %, sensor-vs-component %
DONE_WHEN = {"detected_pct": 95.0, "cause_pct": 80.0, "sensor_pct": 90.0}
WEEK_S = 7 * 86400.0


@dataclass(frozen=True)
class FaultOutcome:
    """One injected fault and what the monitor made of it (times Unix s; NaN: none)."""

    preset: str
    seed: int
    kind: str
    component: str
    is_sensor: bool
    onset_unix: float
    failure_unix: float
    detected_unix: float = math.nan
    cause: str = ""
    sensor_fault: bool = False
    detector: str = "learned"

    @property
    def detected(self) -> bool:
        return not math.isnan(self.detected_unix)

    @property
    def delay_s(self) -> float:
        return self.detected_unix - self.onset_unix

    @property
    def lead_s(self) -> float:
        """Seconds from detection to failure (NaN when undetected or it never fails)."""
        if not self.detected or math.isinf(self.failure_unix):
            return math.nan
        return self.failure_unix - self.detected_unix

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(detected=self.detected, delay_s=self.delay_s, lead_s=self.lead_s)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}


def score_day(faults: Sequence, marks: Sequence[FaultMark], start_unix: float,
              end_unix: float, preset: str = "", seed: int = 0, detector: str = "learned"
              ) -> tuple[list[FaultOutcome], list[FaultMark]]:
    """Each of ``faults`` (FaultSpec, times in s after ``start_unix``, one per component)
    against the ``marks`` of a run monitored up to ``end_unix``; and the false alarms (new
    marks before their component's onset, or on a component without a fault)."""
    by_component = {}
    for f in faults:
        if f.component in by_component:
            raise ValueError(f"faults: two on {f.component!r} ({by_component[f.component].kind},"
                             f" {f.kind}); the evaluation injects one per component")
        by_component[f.component] = f
    outcomes = []
    for f in faults:
        onset = start_unix + f.onset_s
        failure = start_unix + f.failure_s
        stop = min(failure, end_unix)
        first = next((m for m in marks if m.component == f.component
                      and onset <= m.t_unix <= stop), None)
        outcomes.append(FaultOutcome(
            preset, seed, f.kind, f.component, f.is_sensor, onset, failure,
            first.t_unix if first else math.nan, first.cause if first else "",
            first.sensor_fault if first else False, detector))
    false = [m for m in marks if m.new and (
        m.component not in by_component
        or m.t_unix < start_unix + by_component[m.component].onset_s)]
    return outcomes, false


def _pct(hits: int, of: int) -> float:
    return 100.0 * hits / of if of else math.nan


def _summary(preset: str, kind: str, group: Sequence[FaultOutcome]) -> dict:
    found = [o for o in group if o.detected]
    delays = np.array([o.delay_s for o in found]) / 60.0
    leads = np.array([o.lead_s for o in found if not math.isnan(o.lead_s)]) / 3600.0
    row = {"preset": preset, "fault": kind, "injected": len(group),
           "detected": len(found), "detected_pct": _pct(len(found), len(group)),
           "delay_med_min": float(np.median(delays)) if len(delays) else math.nan,
           "delay_p90_min": float(np.percentile(delays, 90)) if len(delays) else math.nan,
           "lead_med_h": float(np.median(leads)) if len(leads) else math.nan,
           "with_failure": sum(1 for o in group if math.isfinite(o.failure_unix)),
           "cause_pct": _pct(sum(o.cause == o.kind for o in found), len(found)),
           "sensor_pct": _pct(sum(o.sensor_fault == o.is_sensor for o in found), len(found)),
           "causes_named": ", ".join(f"{c or '-'} {n}" for c, n in
                                     Counter(o.cause for o in found).most_common())}
    ok = all(row[k] >= v for k, v in DONE_WHEN.items())       # NaN compares False
    row["met"] = "yes" if ok else "no"
    return row


def class_rows(outcomes: Sequence[FaultOutcome], presets: Sequence[str] | None = None,
               pooled: bool = True) -> list[dict]:
    """One row per (preset, fault class) with faults injected, then (``pooled``) per class
    over all presets (preset ``all``), then every fault together (fault ``all``)."""
    presets = list(presets) if presets is not None else list(
        dict.fromkeys(o.preset for o in outcomes))
    kinds = [k for k in FAULT_CLASSES if any(o.kind == k for o in outcomes)]
    rows = [_summary(p, k, group) for p in presets for k in kinds
            if (group := [o for o in outcomes if o.preset == p and o.kind == k])]
    if pooled and outcomes:
        rows += [_summary("all", k, [o for o in outcomes if o.kind == k]) for k in kinds]
        rows.append(_summary("all", "all", list(outcomes)))
    return rows


def alarm_row(label: str, alarms: Sequence[FaultMark], rack_s: float, **extra) -> dict:
    """False alarms over ``rack_s`` seconds of a whole rack monitored: count, per rack-week
    and by cause."""
    weeks = rack_s / WEEK_S
    return {"set": label, **extra, "rack_weeks": weeks, "false_alarms": len(alarms),
            "per_rack_week": len(alarms) / weeks if weeks > 0 else math.nan,
            "causes": ", ".join(f"{c or '-'} {n}" for c, n in
                                Counter(a.cause for a in alarms).most_common()) or "-"}
