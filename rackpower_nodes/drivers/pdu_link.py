"""Actuator input/output off the control loop: the newest allocation is written on a worker.

The actuators are PDUs (outlet allocation registers, `drivers.pdu`) and server BMCs (power
limits over Redfish, `drivers.bmc`); both are `PduClient`s, here called targets. The control
step hands each new allocation to `PduLink.submit` and returns at once; a worker thread writes
it to every target that takes allocations, reconnects targets that stopped answering (every
`retry_s`), and keeps per-target counters for diagnostics. Only the newest allocation matters,
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
changes; a skipped shrink keeps the larger value counted, so the budget still holds.
"""
from __future__ import annotations

import logging
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
    connected_once: bool = False
    last_attempt: float = -1e9
    last_error: str = ""
    writes: int = 0
    failures: int = 0
    reconnects: int = 0
    last_ok: float | None = None   # monotonic time of the last successful request

    @property
    def writable(self) -> bool:
        return bool(self.client.can_write_allocations)


@dataclass
class _Pending:
    allocation_w: np.ndarray
    t_ref: float                   # perf_counter of the event that caused it (latency start)


@dataclass
class LinkStatus:
    ok: bool
    reason: str
    pdus: list[dict] = field(default_factory=list)


class PduLink:
    """Writes allocations to PDUs on a worker thread, within `budget_w` at every step.

    Args:
        targets: the PDUs and the component outlets on each.
        n_components: length of the allocation vectors.
        budget_w: the rack budget no sum of acknowledged allocations may exceed, W.
        initial_w: what the outlets are assumed to hold before the first write, W (the
            worst case, e.g. their ceilings, unless they are known).
        retry_s: wait between connection attempts to a PDU that is down, s.
    """

    def __init__(self, targets: Sequence[PduTarget], n_components: int, budget_w: float,
                 initial_w: np.ndarray, retry_s: float = 1.0):
        self.targets = list(targets)
        self.budget_w = float(budget_w)
        self.retry_s = float(retry_s)
        self.heartbeat_s = min(self.retry_s, HEARTBEAT_S)
        self.in_force_w = np.array(initial_w, dtype=float).reshape(n_components)
        self._worst = self.in_force_w.copy()
        self._driven = np.zeros(n_components, bool)
        self._dead_band = np.zeros(n_components)
        self._resolution = np.zeros(n_components)
        for t in self.targets:
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
            t.last_error = f"{t.name}: {exc}"
            return t.last_error
        if t.connected_once:
            t.reconnects += 1
            _log.info("%s %s reconnected", t.kind.upper(), t.name)
        t.connected_once, t.last_error, t.last_ok = True, "", time.monotonic()
        self._read_back(t)
        return ""

    def _read_back(self, t: PduTarget) -> None:
        """What a (re)connected PDU holds now: it may have restarted with its defaults, so
        the budget arithmetic starts from its registers, or from the ceilings if unread."""
        if not t.writable:
            return
        try:
            held = np.asarray(t.client.read_allocations(t.outlets.tolist()), dtype=float)
        except PduError as exc:
            _log.warning("%s %s: cannot read its allocations back (%s); assuming the "
                         "worst case", t.kind.upper(), t.name, exc)
            held = np.full(len(t.outlets), np.inf)
        self.in_force_w[t.index] = np.where(np.isfinite(held), held, self._worst[t.index])

    def close(self) -> None:
        self.stop()
        with self._io:
            self._each(self.targets, lambda t: t.client.close())
        self._pool.shutdown(wait=True)

    # -- worker -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
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

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._pending is None and not self._stop:
                    self._cond.wait(timeout=self.heartbeat_s)
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
                        and now - t.last_attempt >= self.retry_s], self._connect)
            self._each([t for t in self.targets if t.client.connected
                        and (t.last_ok is None
                             or now - t.last_ok >= (t.heartbeat_s or self.heartbeat_s))],
                       self._heartbeat)
            if item is None:
                return
            ok = self._write(item.allocation_w)
        self.latency_ms.append((time.perf_counter() - item.t_ref) * 1e3)
        self.last_written = ok and self._driven.any()
        self.written += 1

    def _heartbeat(self, t: PduTarget) -> None:
        """A read, so a PDU that stopped answering is noticed even while nothing changes."""
        try:
            t.client.read_outlets(t.outlets[:1].tolist())
        except PduError as exc:
            t.failures += 1
            t.last_error = f"{t.name}: {exc}"
            _log.warning("%s %s: not answering: %s", t.kind.upper(), t.name, exc)
            return
        t.last_ok = time.monotonic()

    def write_now(self, allocation_w: np.ndarray, exact: bool = False) -> bool:
        """Write `allocation_w` on the caller's thread (safe allocations on deactivate and
        shutdown); True when every target that takes allocations acknowledged it. `exact`
        writes changes under the dead bands too: a split that fills the budget lands whole
        only if no shrink is skipped."""
        with self._io:
            self._each([t for t in self.targets if not t.client.connected], self._connect)
            ok = self._write(np.array(allocation_w, dtype=float), exact)
        self.last_written = ok and self._driven.any()
        return ok

    # -- the budget-keeping write -----------------------------------------------------------
    def _write(self, want: np.ndarray, exact: bool = False) -> bool:
        """Shrinking outlets first, then growing ones as far as the budget allows."""
        want = float32_floor(np.where(np.isfinite(want), np.maximum(want, 0.0), 0.0))
        if not exact:
            want = skip_small_changes(self.in_force_w, want, self._dead_band, self._resolution)
        shrink = self._driven & (want < self.in_force_w)
        all_ok = self._write_where(shrink, want)
        grow = self._driven & (want > self.in_force_w)
        if grow.any():          # from what the shrinks left in force, even where they failed
            target = grow_within_budget(self.in_force_w, want, grow, self.budget_w)
            all_ok &= self._write_where(grow, float32_floor(target))
            all_ok &= bool(np.all(target[grow] >= want[grow]))
        return all_ok

    def _write_where(self, mask: np.ndarray, values: np.ndarray) -> bool:
        todo = [t for t in self.targets if t.writable and mask[t.index].any()]
        return all(self._each(todo, lambda t: self._write_target(t, mask, values)))

    def _write_target(self, t: PduTarget, mask: np.ndarray, values: np.ndarray) -> bool:
        """Write one target's share; True when it acknowledged exactly those values."""
        if not t.client.connected:
            return False
        sel = mask[t.index]
        idx = t.index[sel]
        vals = round_down(values[idx], t.resolution_w)     # BMCs take whole watts
        try:
            held = t.client.write_allocations(t.outlets[sel].tolist(), vals.tolist())
        except PduError as exc:
            t.failures += 1
            t.last_error = f"{t.name}: {exc}"
            _log.warning("%s %s: write failed: %s", t.kind.upper(), t.name, exc)
            return False
        t.writes += 1
        t.last_ok = time.monotonic()
        if held is None:
            self.in_force_w[idx] = vals
            return True
        held = np.asarray(held, dtype=float).reshape(idx.shape)
        # a component behind two targets (outlet register and BMC) is limited by the smaller
        # value; whichever of the two lands here counts at least that much
        self.in_force_w[idx] = held
        if np.all(held == vals):
            return True
        t.last_error = (f"{t.name}: holds {np.round(held, 3).tolist()} W where "
                        f"{np.round(vals, 3).tolist()} W was written (outside what it "
                        f"allows)")
        _log.warning("%s", t.last_error)
        return False

    # -- state ------------------------------------------------------------------------------
    def held_w(self) -> np.ndarray:
        """What the devices acknowledged holding, per component, W (NaN where no target
        takes allocations)."""
        return np.where(self._driven, self.in_force_w, np.nan)

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
                 "last_ok_age_s": None if t.last_ok is None else round(now - t.last_ok, 3)}
                for t in self.targets]
        return LinkStatus(*self.health(), pdus)
