"""The PDU link's read-back verification: the devices are the truth.

`_ReadBack` is mixed into `PduLink`: it reads targets' allocations (and boot markers) back,
counts and names values other than the ones acknowledged (marked for correction), counts
restarts, and books failed requests. It uses the link's targets, `_each`, `_io` and the
in-force accounting of `_BudgetWrites`. Values in W, times in s.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

from rackpower_nodes.drivers.pdu import PduError
from rackpower_nodes.drivers.pdu_link.target import Confirmation, PduTarget, float32_floor

_log = logging.getLogger(__name__)


class _ReadBack:
    """Read-back verification of a `PduLink` (see the package docstring, "Verification")."""

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
                meant = t.rounded(want[t.index])
                for k in np.flatnonzero(~(t.held == meant)):
                    found = ("not read back: " + (t.last_error or "not connected")
                             if np.isnan(t.held[k]) else f"found {t.held[k]:g} W")
                    diffs.append(f"{t.label} outlet {int(t.outlets[k])}: expected "
                                 f"{meant[k]:g} W, {found}")
        return Confirmation(not diffs, self.held_w(), self._driven.copy(), diffs)

    def _fix_mask(self) -> np.ndarray:
        """Components with a value found other than the one acknowledged."""
        fix = np.zeros(self.n, bool)
        for t in self.targets:
            fix[t.index[t.fixing]] = True
        return fix
