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
the period) and after every (re)connect. A write whose answer carries the value the device
holds (a BMC's PATCH answer; a Modbus write's echo does not) counts as such a reading: that
target's next read-back is due a period after the write, so a device written more often than
`verify_s` is not also read, and every device is still heard from at least every `verify_s`.
A value other than the one rackpower last had acknowledged (a foreign write, a device
restarted with its defaults, a clamp) is counted, logged and named (device, outlet, expected,
found), counted as in force from then on, and corrected at once through the same
shrink-first, grow-within-budget write (past the dead bands). Where a PDU's map has a
`boot_count` or `uptime_s` point it is read with each read-back, and a restart is counted and
logged.

`held_w()` is what the devices reported in the newest read-back or write acknowledgement,
per component: NaN where unknown (before the first read, after a failed request, where no
target takes allocations), inf where a BMC reports no limit. A component enforced by two
targets (an outlet register and a BMC limit) is limited by the smaller value: it shows the
smaller of the two, and NaN while either is unknown. The budget arithmetic keeps its own
worst-case vector (`in_force_w`): per target what it last reported or acknowledged (the
larger value after a failed write), per component the largest of its targets' values.

The parts: `target` (a target and its bookkeeping, the link's reports), `verification` (the
read-back) and `writing` (the budget-keeping write and the in-force accounting); `PduLink`,
here, adds connecting, the worker and the state, and this package re-exports the public names.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.drivers.pdu import PduCapabilityError, PduError
from rackpower_nodes.drivers.pdu_link.target import (
    Confirmation, LinkStatus, PduTarget, float32_floor)
from rackpower_nodes.drivers.pdu_link.verification import _ReadBack
from rackpower_nodes.drivers.pdu_link.writing import _BudgetWrites

__all__ = ["Confirmation", "LinkStatus", "PduLink", "PduTarget", "float32_floor"]

_log = logging.getLogger(__name__)

LATENCY_WINDOW = 500
HEARTBEAT_S = 0.5          # longest silence before a target is read to check it still answers
VERIFY_S = 0.5             # read-back period of every target that takes allocations, s
RETRY_FIRST_S = 0.05       # first wait between connection attempts, doubling up to retry_s
MAX_WORKERS = 8            # requests in flight at once, to different targets


@dataclass
class _Pending:
    allocation_w: np.ndarray
    t_ref: float                   # perf_counter of the event that caused it (latency start)


class PduLink(_ReadBack, _BudgetWrites):
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

    def _heartbeat(self, t: PduTarget) -> None:
        """A read, so a PDU that stopped answering is noticed even while nothing changes."""
        try:
            t.client.read_outlets(t.outlets[:1].tolist())
        except PduError as exc:
            self._failed(t, exc, "not answering")
            return
        t.last_ok = time.monotonic()

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
