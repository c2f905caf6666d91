"""The PDU link's write path: shrink first, grow within the budget, and the in-force accounting.

`_BudgetWrites` is mixed into `PduLink`: it writes an allocation so that the sum of what the
targets acknowledged never exceeds the budget in any intermediate state, books each target's
acknowledged and worst-case values, and settles corrections. It uses the link's targets,
`_each`, `_io` and the read-back of `_ReadBack`. Values in W.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from rackpower_nodes.core.actuation import grow_within_budget, skip_small_changes
from rackpower_nodes.drivers.pdu import PduError
from rackpower_nodes.drivers.pdu_link.target import PduTarget, float32_floor

_log = logging.getLogger(__name__)


class _BudgetWrites:
    """The budget-keeping write of a `PduLink` (see the package docstring)."""

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

    def _write(self, want: np.ndarray, exact: bool | np.ndarray = False) -> bool:
        """Shrinking outlets first, then growing ones as far as the budget allows (all in one
        request per target when the budget holds every old and new value at once); `exact`
        (all, or a mask of components: corrections) writes past the dead bands."""
        self._want = np.array(want, dtype=float)
        want = float32_floor(np.where(np.isfinite(want), np.maximum(want, 0.0), 0.0))
        exact = np.broadcast_to(np.asarray(exact, dtype=bool), want.shape)
        want = np.where(exact, want, skip_small_changes(self.in_force_w, want, self._dead_band,
                                                        self._resolution))
        if self._fits_in_any_order(want):
            # every component ends at its old or its new value and is counted at the larger
            # meanwhile: no order of the writes can pass the budget, so each target gets its
            # changes in one request (not one to shrink and another to grow)
            all_ok = self._write_where(self._driven, want)
            self._settle_fixes(want)
            return all_ok
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

    def _fits_in_any_order(self, want: np.ndarray) -> bool:
        """Whether the budget holds the larger of each driven component's value in force and
        `want` (W) at once, the others as they are in force."""
        worst = np.where(self._driven, np.maximum(self.in_force_w, want), self.in_force_w)
        return float(worst.sum()) <= self.budget_w

    def _settle_fixes(self, want: np.ndarray) -> None:
        """A value found other than the one acknowledged that is what is wanted now needed
        no write: it is acknowledged as it is."""
        for t in self.targets:
            if not t.fixing.any():
                continue
            same = t.fixing & (t.held == t.rounded(want[t.index]))
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
                sel = mask[t.index] & (t.in_force != t.rounded(values[t.index]))
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
        vals = t.rounded(values[idx])     # BMCs take whole watts
        try:
            held = t.client.write_allocations(t.outlets[sel].tolist(), vals.tolist())
        except PduError as exc:
            self._failed(t, exc, "write failed")
            # it may have landed: the larger of the old and the new value counts
            self._set_in_force(t, sel, np.maximum(t.in_force[sel], vals))
            return False
        t.writes += 1
        t.last_ok = time.monotonic()
        if held is not None and sel.all():
            # the answer says what the device holds now (a BMC's PATCH answer): as good as a
            # read-back, so the next one is due a period after it, not before
            t.next_verify = max(t.next_verify, t.last_ok + self._period(t))
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
