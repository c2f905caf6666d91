"""The summary `make demo` ends with: what happened and what went wrong, built from what the
demo observed (no rclpy here: plain values in, text out).

Two tables. Per fault injected (:func:`fault_rows`): detected or not, after how long, as what
(cause, sensor or component fault), what the actuator said meanwhile (its modes and the
safe-mode reason), how many allocations stayed within the budget in force, and breaker trips.
Then everything else that went wrong (:func:`incident_rows`): each spell of safe mode with its
reason and length, allocations above the budget, frames lost, corrections, processes that
exited, and every kind of warning or error the processes logged with its count
(`tools/demo_log.py`).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

__all__ = ["AllocationSeen", "FaultSeen", "fault_rows", "format_table", "incident_rows",
           "safe_spells", "summary"]

FAULT_HEADERS = ("fault", "injected", "detected", "after", "named as", "actuator meanwhile",
                 "within budget", "breaker trips")
INCIDENT_HEADERS = ("what went wrong", "when", "how long / how many", "detail")


@dataclass(frozen=True)
class AllocationSeen:
    """One power_allocation as the demo received it: stamp (s since the epoch), mode and
    reason, the total allocated and the budget in force (W)."""

    t_unix: float
    mode: str
    reason: str
    total_w: float
    budget_w: float

    @property
    def within_budget(self) -> bool:
        return self.total_w <= self.budget_w * (1 + 1e-6)


@dataclass(frozen=True)
class FaultSeen:
    """A fault the demo injected (`kind` on `component` at `injected_unix`, with the
    simulator's breaker trip count then) and the first health report naming it (None: none)."""

    kind: str
    component: str
    injected_unix: float
    trips_at_injection: int = 0
    found_unix: float | None = None
    cause: str = ""
    sensor_fault: bool = False


def safe_spells(allocs: list[AllocationSeen]) -> list[tuple[float, float, str, bool]]:
    """(start, end, reason, ended) per run of consecutive safe-mode allocations (stamps, s);
    a run still going at the last allocation ends there with `ended` False."""
    spells, start, reason = [], None, ""
    for a in allocs:
        if a.mode == "safe" and start is None:
            start, reason = a.t_unix, a.reason
        elif a.mode != "safe" and start is not None:
            spells.append((start, a.t_unix, reason, True))
            start = None
    if start is not None:
        spells.append((start, allocs[-1].t_unix, reason, False))
    return spells


def _modes(allocs: list[AllocationSeen]) -> str:
    counts = Counter(a.mode for a in allocs)
    text = ", ".join(f"{m} {n}" for m, n in counts.items()) or "no allocation"
    safe = next((a.reason for a in allocs if a.mode == "safe"), "")
    return text + (f" (safe: {safe})" if safe else "")


def fault_rows(faults: list[FaultSeen], allocs: list[AllocationSeen], t0: float,
               trips_end: int, end_unix: float) -> list[tuple[str, ...]]:
    """One row per fault (`FAULT_HEADERS`); each fault's span runs to the next injection or
    `end_unix`, where the simulator had counted `trips_end` trips; `t0`: the rack's start."""
    rows = []
    for i, f in enumerate(faults):
        nxt = faults[i + 1] if i + 1 < len(faults) else None
        until = nxt.injected_unix if nxt else end_unix
        trips = (nxt.trips_at_injection if nxt else trips_end) - f.trips_at_injection
        span = [a for a in allocs if f.injected_unix <= a.t_unix < until]
        if f.found_unix is None:
            detected, after, named = "NO", "-", "-"
        else:
            detected, after = "yes", f"{f.found_unix - f.injected_unix:.1f} s"
            named = f"{f.cause} ({'sensor' if f.sensor_fault else 'component'} fault)" + (
                "" if f.cause == f.kind else f", WRONG: expected {f.kind}")
        within = sum(a.within_budget for a in span)
        rows.append((f"{f.kind} on {f.component}", f"{f.injected_unix - t0:+.1f} s", detected,
                     after, named, _modes(span), f"{within}/{len(span)}", str(trips)))
    return rows


def incident_rows(allocs: list[AllocationSeen], t0: float, *, frames_lost: int = 0,
                  corrections: dict[str, int] | None = None, exited: list[str] = (),
                  logged=(), max_logged: int = 8) -> list[tuple[str, ...]]:
    """Everything else that went wrong (`INCIDENT_HEADERS`), in the order an operator would
    look: processes that exited, safe mode, allocations over budget, lost frames,
    corrections, then `logged` (LogKind-like: source, level, example, count) kinds of
    warnings and errors, most frequent first: the first `max_logged`, then one row for the
    rest. `t0`: the rack's start (stamps, s)."""
    rows = [("process exited early", "-", "-", name) for name in exited]
    # spells for one reason (its numbers aside) make one row: a flapping input is one line
    spells: dict[str, list] = {}
    for spell in safe_spells(allocs):
        spells.setdefault(re.sub(r"\d+(?:\.\d+)?", "#", spell[2]), []).append(spell)
    for group in spells.values():
        start, _, reason, _ = group[0]
        total = sum(end - begin for begin, end, _, _ in group)
        rows.append(("actuator in safe mode", f"{start - t0:+.1f} s",
                     (f"{total:.1f} s" if len(group) == 1 else
                      f"{len(group)} times, {total:.1f} s in all")
                     + ("" if group[-1][3] else ", still at the end"), reason))
    over = [a for a in allocs if not a.within_budget]
    if over:
        rows.append(("allocations above the budget", f"{over[0].t_unix - t0:+.1f} s",
                     str(len(over)), f"first: {over[0].total_w:.0f} of {over[0].budget_w:.0f} W"))
    if frames_lost:
        rows.append(("sensor frames lost", "-", str(frames_lost),
                     "CRC or header errors on the board link (the simulator injects some)"))
    if corrections:
        rows.append(("allocation corrections", "-", str(sum(corrections.values())),
                     ", ".join(f"{k} {n}" for k, n in corrections.items())))
    logged = list(logged)
    for k in logged[:max_logged]:
        rows.append((f"{k.level.lower()} logged by {k.source}", "-", str(k.count), k.example))
    rest = logged[max_logged:]
    if rest:
        rows.append((f"{len(rest)} other kinds of warning", "-",
                     str(sum(k.count for k in rest)),
                     "from " + ", ".join(sorted({k.source for k in rest}))))
    return rows


def format_table(headers, rows, width: int = 60) -> str:
    """`rows` under `headers` as a markdown table, columns padded to line up; a cell longer
    than `width` characters is cut with '...'."""
    def cut(text: str) -> str:
        text = str(text).replace("|", "/")
        return text if len(text) <= width else text[:width - 3] + "..."

    cells = [[cut(h) for h in headers]] + [[cut(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def summary(faults: list[FaultSeen], allocs: list[AllocationSeen], t0: float, end_unix: float,
            trips_end: int, **incidents) -> str:
    """Both tables with their headings; `incidents`: :func:`incident_rows`' keywords."""
    out = [f"== summary: the faults injected ({len(faults)}) ==",
           format_table(FAULT_HEADERS, fault_rows(faults, allocs, t0, trips_end, end_unix))
           if faults else "(none injected)", ""]
    rows = incident_rows(allocs, t0, **incidents)
    out.append(f"== summary: what went wrong ({len(rows)} kinds) ==")
    out.append(format_table(INCIDENT_HEADERS, rows) if rows else "(nothing)")
    out.append(f"(when: seconds since the rack started; breaker trips since then: {trips_end})")
    return "\n".join(out)
