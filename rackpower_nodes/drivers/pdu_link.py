"""Actuator input/output off the control loop: the newest allocation is written on a worker.

The actuators are PDUs (outlet allocation registers, `drivers.pdu`) and server BMCs (power
limits over Redfish, `drivers.bmc`); both are `PduClient`s, here called targets. The control
step hands each new allocation to `PduLink.submit` and returns at once; a worker thread writes
it to every target that takes allocations, reconnects targets that stopped answering (at
once, then after 0.05, 0.1, 0.2 ... s, at most every `retry_s`: a PDU restarting is back
within a second, one that is gone is not hammered), and keeps per-target counters for
diagnostics. Only the newest allocation matters,
so a slow target makes the worker skip stale ones rather than queue them. Requests to
different targets run side by side on a small thread pool (a BMC answers in tens to hundreds
of ms; one at a time, twelve of them would take seconds).

Writes keep the rack budget in every intermediate state: components whose allocation shrinks
are written first (to every target), then components whose allocation grows, each growth
limited so that the sum of the allocations the targets acknowledged never exceeds the budget.
A target that failed keeps counting with its last acknowledged values. A target may hold a
value other than the one written (a BMC raises a limit below its allowable minimum to that
minimum); the link counts what the target says it holds. BMCs take whole watts: values
for a target with a `resolution_w` are rounded down to it. Targets with a dead band
(`min_change_w`, for slow BMCs; at least the resolution) are not written for smaller
changes; a skipped shrink keeps the larger value counted, so the budget still holds. A write
that fails counts the larger of the old and the new value (it may have landed).

Verification: the devices are the truth. Every target that takes allocations is read back on
a steady schedule (every `verify_s`, 0.5 s by default, the targets' reads spread evenly over
the period) and after every (re)connect. A value other than the one rackpower last had
acknowledged (a foreign write, a device restarted with its defaults, a clamp) is counted,
logged and named (device, outlet, expected, found), counted as in force from then on, and
corrected at once through the same shrink-first, grow-within-budget write (past the dead
bands). Where a PDU's map has a `boot_count` or `uptime_s` point it is read with each
read-back, and a restart is counted and logged.

`held_w()` is what the devices reported in the newest read-back or write acknowledgement,
per component: NaN where unknown (before the first read, after a failed request, where no
target takes allocations), inf where a BMC reports no limit. A component enforced by two
targets (an outlet register and a BMC limit) is limited by the smaller value: it shows the
smaller of the two, and NaN while either is unknown. The budget arithmetic keeps its own
worst-case vector (`in_force_w`): per target what it last reported or acknowledged (the
larger value after a failed write), per component the largest of its targets' values.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from rackpower_nodes.core.actuation import grow_within_budget, round_down, skip_small_changes
from rackpower_nodes.drivers.pdu import PduCapabilityError, PduClient, PduError

_log = logging.getLogger(__name__)

LATENCY_WINDOW = 500
HEARTBEAT_S = 0.5          # longest silence before a target is read to check it still answers
VERIFY_S = 0.5             # read-back period of every target that takes allocations, s
RETRY_FIRST_S = 0.05       # first wait between connection attempts, doubling up to retry_s
MAX_WORKERS = 8            # requests in flight at once, to different targets


def float32_floor(watts: np.ndarray) -> np.ndarray:
    """`watts` as float32 values no larger than the float64 ones (registers and messages are
    float32: rounding up could carry a sum over the budget)."""
    w = np.asarray(watts, dtype=np.float64)
    f = w.astype(np.float32)
    f = np.where(f.astype(np.float64) > w, np.nextafter(f, np.float32(-np.inf)), f)
    return np.maximum(f, 0).astype(np.float64)


@dataclass
class PduTarget:
    """One actuator (a PDU, or a server's BMC seen as a one-outlet device): its client, the
    outlets the link drives and those outlets' component indices."""

    name: str
    client: PduClient
    outlets: np.ndarray            # (k,) outlet numbers, 1-based
    index: np.ndarray              # (k,) component index of each outlet
    min_change_w: float = 0.0      # dead band: smaller changes are not written, W
    resolution_w: float = 0.0      # values written rounded down to a multiple of this, W
    heartbeat_s: float | None = None   # longest silence before a read (None: the link's)
    kind: str = "pdu"              # "pdu" or "bmc", for diagnostics
    verify_s: float | None = None  # read-back period, s (None: the link's)
    connected_once: bool = False
    last_attempt: float = -1e9
    failed_attempts: int = 0       # connection attempts failed in a row
    last_error: str = ""
    writes: int = 0
    failures: int = 0
    reconnects: int = 0
    last_ok: float | None = None   # monotonic time of the last successful request
    readbacks: int = 0             # successful read-backs of the allocations
    mismatches: int = 0            # values found other than the one acknowledged
    corrections: int = 0           # of those, rewritten and acknowledged
    reboots: int = 0               # restarts seen in the boot counter or uptime
    last_mismatch: str = ""        # "<device> outlet k: expected X W, found Y W"
    last_mismatch_t: float | None = None   # monotonic time of it
    last_reboot: str = ""
    held: np.ndarray = field(default=None, repr=False)      # (k,) reported, W (NaN unknown)
    expected: np.ndarray = field(default=None, repr=False)  # (k,) last acknowledged, W
    fixing: np.ndarray = field(default=None, repr=False)    # (k,) mismatch not yet corrected
    in_force: np.ndarray = field(default=None, repr=False)  # (k,) worst case for the budget
    boot: tuple[str, float] | None = None                   # last boot counter / uptime read
    next_verify: float = 0.0

    def __post_init__(self) -> None:
        k = len(self.outlets)
        self.held = np.full(k, np.nan)
        self.expected = np.full(k, np.nan)
        self.fixing = np.zeros(k, bool)
        self.in_force = np.full(k, np.inf)

    @property
    def writable(self) -> bool:
        return bool(self.client.can_write_allocations)

    @property
    def label(self) -> str:
        return f"{self.kind.upper()} {self.name}"


@dataclass
class _Pending:
    allocation_w: np.ndarray
    t_ref: float                   # perf_counter of the event that caused it (latency start)


@dataclass
class LinkStatus:
    ok: bool
    reason: str
    pdus: list[dict] = field(default_factory=list)


@dataclass
class Confirmation:
    """What a read-back of every target found against the allocation meant to be held."""

    ok: bool                       # every target read back and holds what was meant
    held_w: np.ndarray             # (n,) per component as `PduLink.held_w`, W
    driven: np.ndarray             # (n,) components some target enforces
    differences: list[str]         # one line per outlet that differs or could not be read

    @property
    def held_total_w(self) -> float:
        """What the devices hold in all, W (NaN while any enforced component is unknown)."""
        return float(np.sum(self.held_w[self.driven]))


class PduLink:
    """Writes allocations to PDUs on a worker thread, within `budget_w` at every step.

    Args:
        targets: the PDUs and the component outlets on each.
        n_components: length of the allocation vectors.
        budget_w: the rack budget no sum of acknowledged allocations may exceed, W.
        initial_w: what the outlets are assumed to hold before the first write, W (the
            worst case, e.g. their ceilings, unless they are known).
        retry_s: wait between connection attempts to a PDU that is down, s.
        verify_s: read-back period of each target that takes allocations, s.
    """

    def __init__(self, targets: Sequence[PduTarget], n_components: int, budget_w: float,
                 initial_w: np.ndarray, retry_s: float = 1.0, verify_s: float = VERIFY_S):
        self.targets = list(targets)
        self.budget_w = float(budget_w)
        self.retry_s = float(retry_s)
        if not (math.isfinite(verify_s) and verify_s > 0):
            raise ValueError(f"verify_s = {verify_s!r}: expected a finite period > 0 s")
        self.verify_s = float(verify_s)
        self.heartbeat_s = min(self.retry_s, HEARTBEAT_S)
        self.n = int(n_components)
        self.in_force_w = np.array(initial_w, dtype=float).reshape(n_components)
        self._worst = self.in_force_w.copy()
        self._state = threading.Lock()          # per-target values and their combination
        self._want: np.ndarray | None = None     # the newest allocation written, W
        self._driven = np.zeros(n_components, bool)
        self._dead_band = np.zeros(n_components)
        self._resolution = np.zeros(n_components)
        for t in self.targets:
            t.in_force = self._worst[t.index].copy()
            self._driven[t.index] |= t.writable
            if t.writable:
                self._dead_band[t.index] = np.maximum(self._dead_band[t.index], t.min_change_w)
                self._resolution[t.index] = np.maximum(self._resolution[t.index],
                                                       t.resolution_w)
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(self.targets))),
                                        thread_name_prefix="pdu-io")
        self._cond = threading.Condition()
        self._pending: _Pending | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._io = threading.Lock()             # one request sequence at a time
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # the newest finished write reached every target that takes allocations (False when
        # none does: monitoring-only PDUs)
        self.last_written = False
        self.written = 0

    # -- connection -------------------------------------------------------------------------
    def connect_all(self) -> list[str]:
        """Connect every target now; returns one error message per target that failed."""
        with self._io:
            return [err for err in self._each(self.targets, self._connect) if err]

    def _each(self, targets: Sequence[PduTarget], fn: Callable[[PduTarget], object]) -> list:
        """`fn(t)` for every target in `targets`, side by side; results in order."""
        if len(targets) <= 1:
            return [fn(t) for t in targets]
        return list(self._pool.map(fn, targets))

    def _connect(self, t: PduTarget) -> str:
        t.last_attempt = time.monotonic()
        try:
            t.client.connect()
        except (PduError, PduCapabilityError) as exc:
            t.failed_attempts += 1
            t.last_error = f"{t.name}: {exc}"
            return t.last_error
        t.failed_attempts = 0
        if t.connected_once:
            t.reconnects += 1
            _log.info("%s reconnected", t.label)
        t.connected_once, t.last_error, t.last_ok = True, "", time.monotonic()
        self._verify(t, "after connecting")
        return "" if t.client.connected else t.last_error     # the read-back failed

    # -- verification -------------------------------------------------------------------------
    def _period(self, t: PduTarget) -> float:
        """Read-back period of a target that takes allocations (its heartbeat, if shorter)."""
        return min(t.verify_s or self.verify_s, t.heartbeat_s or math.inf)

    def _verify(self, t: PduTarget, when: str = "read-back") -> bool:
        """Read a target's allocations (and boot counter) back and compare them with what it
        last acknowledged; True when a value differs (it is then marked for correction)."""
        if not t.writable:
            return False
        now = time.monotonic()
        t.next_verify = max(t.next_verify + self._period(t), now + 0.5 * self._period(t))
        try:
            found = np.asarray(t.client.read_allocations(t.outlets.tolist()), dtype=float)
            marker = t.client.read_boot_marker()
        except PduError as exc:
            # the budget keeps counting its last acknowledged values (module docstring)
            self._failed(t, exc, "cannot read its allocations back")
            return False
        t.readbacks += 1
        t.last_ok = time.monotonic()
        self._check_boot(t, marker)
        t.held = found.copy()
        # the budget arithmetic counts what the device holds (its worst case where it shows
        # no limit, e.g. a BMC without one)
        self._set_in_force(t, np.ones(len(t.outlets), bool),
                           np.where(np.isfinite(found), found, self._worst[t.index]))
        bad = np.isfinite(t.expected) & (found != t.expected)
        new = np.flatnonzero(bad & ~t.fixing)
        if new.size:
            t.mismatches += int(new.size)
            t.last_mismatch = "; ".join(
                f"{t.label} outlet {int(t.outlets[k])}: expected {t.expected[k]:g} W, found "
                f"{found[k]:g} W ({when})" for k in new)
            t.last_mismatch_t = t.last_ok
            _log.warning("%s: a foreign write, a restart or a clamp; correcting",
                         t.last_mismatch)
        t.fixing |= bad
        return bool(bad.any())

    def _check_boot(self, t: PduTarget, marker: tuple[str, float] | None) -> None:
        """Count a restart when the boot counter changed or the uptime went back."""
        prev, t.boot = t.boot, marker
        if marker is None or prev is None or prev[0] != marker[0]:
            return
        kind, value = marker
        if (value != prev[1]) if kind == "boot_count" else (value < prev[1]):
            t.reboots += 1
            t.last_reboot = f"{t.label} restarted ({kind} {prev[1]:g} -> {value:g})"
            _log.warning("%s", t.last_reboot)

    def _failed(self, t: PduTarget, exc: Exception, what: str) -> None:
        """A request to `t` failed: counted, named, and its values unknown from now on."""
        t.failures += 1
        t.last_error = f"{t.name}: {exc}"
        t.held[:] = np.nan
        _log.warning("%s: %s: %s", t.label, what, exc)

    def verify_now(self) -> list[str]:
        """Read every connected target back now, on the caller's thread (without
        correcting); per device with a value other than the one acknowledged, a line
        naming each such outlet, expected and found."""
        with self._io:
            todo = [t for t in self.targets if t.writable and t.client.connected]
            self._each(todo, self._verify)
            return [t.last_mismatch for t in todo if t.fixing.any()]

    def confirm(self, want_w: np.ndarray) -> Confirmation:
        """Read every target back now and compare it with `want_w` (W, as a write of it
        leaves it: float32, rounded down to each target's resolution)."""
        want = float32_floor(np.where(np.isfinite(want_w), np.maximum(want_w, 0.0), 0.0))
        with self._io:
            todo = [t for t in self.targets if t.writable]
            self._each([t for t in todo if t.client.connected], self._verify)
            diffs = []
            for t in todo:
                meant = round_down(want[t.index], t.resolution_w)
                for k in np.flatnonzero(~(t.held == meant)):
                    found = ("not read back: " + (t.last_error or "not connected")
                             if np.isnan(t.held[k]) else f"found {t.held[k]:g} W")
                    diffs.append(f"{t.label} outlet {int(t.outlets[k])}: expected "
                                 f"{meant[k]:g} W, {found}")
        return Confirmation(not diffs, self.held_w(), self._driven.copy(), diffs)

    def close(self) -> None:
        self.stop()
        with self._io:
            self._each(self.targets, lambda t: t.client.close())
        self._pool.shutdown(wait=True)

    # -- worker -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        now = time.monotonic()
        writable = [t for t in self.targets if t.writable]
        for i, t in enumerate(writable):       # read-backs spread evenly over the period
            t.next_verify = now + self._period(t) * (i + 1) / len(writable)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pdu-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def submit(self, allocation_w: np.ndarray, t_ref: float | None = None) -> None:
        """Queue `allocation_w` (replacing any not yet written); returns at once."""
        with self._cond:
            self._pending = _Pending(np.array(allocation_w, dtype=float),
                                     time.perf_counter() if t_ref is None else t_ref)
            self._cond.notify()

    def _next_due_s(self) -> float:
        """Seconds until the next read-back or connection attempt is due (at most a
        heartbeat)."""
        due = [t.next_verify if t.client.connected else t.last_attempt + self._retry_wait(t)
               for t in self.targets if t.writable or not t.client.connected]
        wait = min(due, default=math.inf) - time.monotonic()
        return min(max(wait, 0.001), self.heartbeat_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._pending is None and not self._stop:
                    self._cond.wait(timeout=self._next_due_s())
                if self._stop:
                    return
                item, self._pending = self._pending, None
            try:
                self._service(item)
            except Exception:      # never let the worker die; the cause is in the log
                _log.exception("PDU link worker: unexpected error")

    def _service(self, item: _Pending | None) -> None:
        with self._io:
            now = time.monotonic()
            self._each([t for t in self.targets if not t.client.connected
                        and now - t.last_attempt >= self._retry_wait(t)], self._connect)
            self._each([t for t in self.targets if t.writable and t.client.connected
                        and now >= t.next_verify], self._verify)
            self._each([t for t in self.targets if not t.writable and t.client.connected
                        and (t.last_ok is None
                             or now - t.last_ok >= (t.heartbeat_s or self.heartbeat_s))],
                       self._heartbeat)
            fix = self._fix_mask()
            want = item.allocation_w if item is not None else self._want
            if want is None or (item is None and not fix.any()):
                return
            ok = self._write(want, exact=fix)
        if item is not None:
            self.latency_ms.append((time.perf_counter() - item.t_ref) * 1e3)
            self.written += 1
        self.last_written = ok and self._driven.any()

    def _retry_wait(self, t: PduTarget) -> float:
        """Wait before the next connection attempt: 0.05 s doubling per failed attempt, at
        most `retry_s`."""
        return min(self.retry_s, RETRY_FIRST_S * 2.0 ** min(t.failed_attempts, 30))

    def _fix_mask(self) -> np.ndarray:
        """Components with a value found other than the one acknowledged."""
        fix = np.zeros(self.n, bool)
        for t in self.targets:
            fix[t.index[t.fixing]] = True
        return fix

    def _heartbeat(self, t: PduTarget) -> None:
        """A read, so a PDU that stopped answering is noticed even while nothing changes."""
        try:
            t.client.read_outlets(t.outlets[:1].tolist())
        except PduError as exc:
            self._failed(t, exc, "not answering")
            return
        t.last_ok = time.monotonic()

    def write_now(self, allocation_w: np.ndarray, exact: bool = False) -> bool:
        """Write `allocation_w` on the caller's thread (safe allocations on deactivate and
        shutdown); True when every target that takes allocations acknowledged it. `exact`
        writes changes under the dead bands too: a split that fills the budget lands whole
        only if no shrink is skipped."""
        with self._io:
            down = [t for t in self.targets if not t.client.connected]
            self._each(down, self._connect)             # read back on connecting
            # the others too: the write starts from what the devices hold now (a foreign
            # value since the last read-back counts)
            self._each([t for t in self.targets if t.writable and t not in down
                        and t.client.connected], self._verify)
            ok = self._write(np.array(allocation_w, dtype=float), exact | self._fix_mask())
        self.last_written = ok and self._driven.any()
        return ok

    # -- the budget-keeping write -----------------------------------------------------------
    def _write(self, want: np.ndarray, exact: bool | np.ndarray = False) -> bool:
        """Shrinking outlets first, then growing ones as far as the budget allows; `exact`
        (all, or a mask of components: corrections) writes past the dead bands."""
        self._want = np.array(want, dtype=float)
        want = float32_floor(np.where(np.isfinite(want), np.maximum(want, 0.0), 0.0))
        exact = np.broadcast_to(np.asarray(exact, dtype=bool), want.shape)
        want = np.where(exact, want, skip_small_changes(self.in_force_w, want, self._dead_band,
                                                        self._resolution))
        shrink = self._driven & (want < self.in_force_w)
        all_ok = self._write_where(shrink, want)
        grow = self._driven & (want > self.in_force_w)
        if grow.any():          # from what the shrinks left in force, even where they failed
            target = grow_within_budget(self.in_force_w, want, grow, self.budget_w)
            all_ok &= self._write_where(grow, float32_floor(target))
            all_ok &= bool(np.all(target[grow] >= want[grow]))
        # the rest: a target below its component's largest value (e.g. a BMC limit lowered
        # by someone else beside an outlet register that holds the allocation) is raised to
        # it, which leaves every component's largest value, and the budget, as they are
        all_ok &= self._write_where(self._driven & ~shrink & ~grow, want)
        self._settle_fixes(want)
        return all_ok

    def _settle_fixes(self, want: np.ndarray) -> None:
        """A value found other than the one acknowledged that is what is wanted now needed
        no write: it is acknowledged as it is."""
        for t in self.targets:
            if not t.fixing.any():
                continue
            same = t.fixing & (t.held == round_down(want[t.index], t.resolution_w))
            if same.any():
                t.expected[same] = t.held[same]
                self._corrected(t, same)

    def _corrected(self, t: PduTarget, which: np.ndarray) -> None:
        n = int(np.count_nonzero(t.fixing & which))
        if n:
            t.corrections += n
            t.fixing &= ~which
            _log.info("%s: corrected %d value(s); holds %s W", t.label, n,
                      np.round(t.held, 3).tolist())

    def _write_where(self, mask: np.ndarray, values: np.ndarray) -> bool:
        """Write `values` of the components in `mask` to every target holding another
        value for them."""
        todo = {}
        for t in self.targets:
            if t.writable:
                sel = mask[t.index] & (t.in_force != round_down(values[t.index],
                                                                t.resolution_w))
                if sel.any():
                    todo[t.name] = (t, sel)
        return all(self._each([t for t, _ in todo.values()],
                              lambda t: self._write_target(t, todo[t.name][1], values)))

    def _write_target(self, t: PduTarget, sel: np.ndarray, values: np.ndarray) -> bool:
        """Write one target's outlets `sel`; True when it acknowledged exactly those
        values."""
        if not t.client.connected:
            return False
        idx = t.index[sel]
        vals = round_down(values[idx], t.resolution_w)     # BMCs take whole watts
        try:
            held = t.client.write_allocations(t.outlets[sel].tolist(), vals.tolist())
        except PduError as exc:
            self._failed(t, exc, "write failed")
            # it may have landed: the larger of the old and the new value counts
            self._set_in_force(t, sel, np.maximum(t.in_force[sel], vals))
            return False
        t.writes += 1
        t.last_ok = time.monotonic()
        held = vals if held is None else np.asarray(held, dtype=float).reshape(idx.shape)
        t.held[sel] = held
        t.expected[sel] = held
        self._corrected(t, sel)
        self._set_in_force(t, sel, np.where(np.isfinite(held), held, self._worst[idx]))
        if np.all(held == vals):
            return True
        t.last_error = (f"{t.name}: holds {np.round(held, 3).tolist()} W where "
                        f"{np.round(vals, 3).tolist()} W was written (outside what it "
                        f"allows)")
        _log.warning("%s", t.last_error)
        return False

    def _set_in_force(self, t: PduTarget, sel: np.ndarray, values: np.ndarray) -> None:
        """A target's worst-case values for the budget, then each component's: the largest
        of its targets' (a component behind an outlet register and a BMC limit counts the
        larger one until both agree)."""
        with self._state:
            t.in_force[sel] = values
            largest = np.full(self.n, -np.inf)
            for u in self.targets:
                if u.writable:
                    np.maximum.at(largest, u.index, u.in_force)
            self.in_force_w = np.where(self._driven, largest, self.in_force_w)

    # -- state ------------------------------------------------------------------------------
    def held_w(self) -> np.ndarray:
        """What the devices reported holding in the newest read-back or write
        acknowledgement, per component, W: the smaller value where two targets enforce a
        component; NaN where unknown or where no target takes allocations; inf where a BMC
        shows no limit."""
        low = np.full(self.n, np.inf)
        unknown = ~self._driven
        for t in self.targets:
            if t.writable:
                held = t.held.copy()
                np.minimum.at(low, t.index, np.where(np.isnan(held), np.inf, held))
                np.logical_or.at(unknown, t.index, np.isnan(held))
        return np.where(unknown, np.nan, low)

    def health(self) -> tuple[bool, str]:
        """(every target connected, why not): cheap, for every control step."""
        down = [t for t in self.targets if not t.client.connected]
        return (not down,
                "; ".join(t.last_error or f"{t.name}: not connected" for t in down))

    def status(self) -> LinkStatus:
        """`health` plus per-target counters, for diagnostics."""
        now = time.monotonic()
        pdus = [{"name": t.name, "kind": t.kind, "connected": t.client.connected,
                 "takes_allocations": t.writable, "writes": t.writes, "failures": t.failures,
                 "reconnects": t.reconnects, "last_error": t.last_error,
                 "last_ok_age_s": None if t.last_ok is None else round(now - t.last_ok, 3),
                 "readbacks": t.readbacks, "foreign_values": t.mismatches,
                 "corrections": t.corrections, "uncorrected": int(t.fixing.sum()),
                 "reboots": t.reboots, "last_foreign_value": t.last_mismatch,
                 "last_foreign_age_s": (None if t.last_mismatch_t is None
                                        else round(now - t.last_mismatch_t, 3)),
                 "last_reboot": t.last_reboot,
                 "held_w": " ".join(f"{v:g}" for v in t.held)}
                for t in self.targets]
        return LinkStatus(*self.health(), pdus)
