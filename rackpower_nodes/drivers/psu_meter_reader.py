"""The PSUs' own meters through the BMCs, polled for the health monitor: `PsuMeterReader`.

Every `period_s`, in a thread of its own (a slow or dead BMC never holds the node's
executor), each configured chassis' PSU readings are read (`drivers.bmc.psu_meter`, read
only) and the new ones handed to a callback as ``(t_unix, {component: (input W, output
W)})``, stamped when they were read. A BMC refreshes its PMBus readings about every 10 s and
says nothing about when; a reading identical to the one last handed over for that chassis is
taken for one the BMC has not refreshed yet and not handed over twice (the health frames
have one reading per poll, NaN between). A chassis that fails is logged in again at the next
period (after a read that timed out, the other chassis of that BMC wait for the next round,
so a dead BMC costs one timeout a round); each new failure is logged once, and
:meth:`PsuMeterReader.bmc_status` says per BMC (scheme://host:port) how the last reads went:
ok, the error, or stale.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rackpower_nodes.core.bmc_login import split_chassis_url
from rackpower_nodes.core.health_monitor_config import PsuMeterSettings
from rackpower_nodes.drivers.bmc.psu_meter import RedfishPsuMeter
from rackpower_nodes.drivers.bmc.redfish import BmcError

__all__ = ["BmcStatus", "PsuMeterReader"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BmcStatus:
    """How the reads of one BMC's chassis went: level "ok", "warn" or "stale", a message and
    per chassis (component) its state."""

    bmc: str
    level: str
    message: str
    chassis: dict[str, str]


class PsuMeterReader:
    """Reads ``settings``' chassis every ``settings.period_s`` s and calls ``push(t_unix,
    {component: (input W, output W)})`` with the new readings of each round."""

    def __init__(self, settings: PsuMeterSettings, password: str,
                 push: Callable[[float, dict[str, tuple[float, float]]], None]):
        self.settings, self._push = settings, push
        self._meters = {c: RedfishPsuMeter(u, username=settings.username, password=password,
                                           auth=settings.auth, timeout_s=settings.timeout_s,
                                           cafile=settings.cafile or None)
                        for c, u in zip(settings.components, settings.urls)}
        self._bmc = {c: split_chassis_url(u)[0] for c, u in zip(settings.components,
                                                                 settings.urls)}
        self._lock = threading.Lock()
        self._error = {c: "" for c in self._meters}
        self._ok_unix = {c: math.nan for c in self._meters}      # last good read
        self._last: dict[str, tuple[float, float]] = {}          # last handed over
        self._started = time.time()
        self.reads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PsuMeterReader:
        if self._meters and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="psu-meters", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0 + 2 * self.settings.timeout_s)
        for meter in self._meters.values():
            meter.close()

    def read_once(self) -> None:
        """One read of every chassis (what the thread does each period)."""
        new: dict[str, tuple[float, float]] = {}
        silent: dict[str, str] = {}         # BMC -> the chassis whose read timed out
        for comp, meter in self._meters.items():
            bmc = self._bmc[comp]
            t0 = time.monotonic()
            try:
                if bmc in silent:           # one timeout per BMC and round, not one each
                    raise BmcError(f"BMC {meter.url}: not read this round: {bmc} did not "
                                   f"answer for {silent[bmc]} within {meter.timeout_s:g} s")
                reading = meter.read()
            except BmcError as exc:
                if time.monotonic() - t0 >= 0.9 * meter.timeout_s:
                    silent.setdefault(bmc, comp)
                with self._lock:
                    if self._error[comp] != str(exc):
                        _log.warning("PSU meters of %s: %s", comp, exc)
                    self._error[comp] = str(exc)
                continue
            now = time.time()
            pair = (reading.input_w, reading.output_w)
            with self._lock:
                self._error[comp], self._ok_unix[comp] = "", now
                self.reads += 1
                if self._last.get(comp) != pair:
                    self._last[comp] = new[comp] = pair
        if new:
            self._push(time.time(), new)

    def _run(self) -> None:
        self.read_once()
        while not self._stop.wait(self.settings.period_s):
            self.read_once()

    def chassis_state(self, component: str, now: float | None = None) -> str:
        """One component's chassis: "ok (<age> s ago)", the error, "not read yet" or ""
        (not read: no chassis configured for it)."""
        if component not in self._meters:
            return ""
        now = time.time() if now is None else now
        with self._lock:
            error, ok = self._error[component], self._ok_unix[component]
        if error:
            return error
        return "not read yet" if not math.isfinite(ok) else f"ok ({now - ok:.0f} s ago)"

    def bmc_status(self, now: float | None = None) -> list[BmcStatus]:
        """Per BMC (in the order configured): stale when one of its chassis gave no good
        reading for ``stale_after_s`` (since start-up when never), else warn when the last
        read of one failed, else ok."""
        now = time.time() if now is None else now
        out = []
        for bmc in dict.fromkeys(self._bmc.values()):
            comps = [c for c, b in self._bmc.items() if b == bmc]
            with self._lock:
                ages = {c: now - (self._ok_unix[c] if math.isfinite(self._ok_unix[c])
                                  else self._started) for c in comps}
                errors = {c: self._error[c] for c in comps if self._error[c]}
            states = {c: self.chassis_state(c, now) for c in comps}
            old = [c for c in comps if ages[c] > self.settings.stale_after_s]
            if old:
                c = old[0]
                why = errors.get(c) or "no answer yet"
                level, text = "stale", (f"stale: no PSU reading of {', '.join(old)} for "
                                        f"{ages[c]:.0f} s; {c}: {why}")
            elif errors:
                level = "warn"
                text = "; ".join(f"{c}: {e}" for c, e in errors.items())
            elif any(not math.isfinite(self._ok_unix[c]) for c in comps):
                level, text = "warn", "not read yet"
            else:
                level = "ok"
                text = (f"ok: {len(comps)} chassis read, the oldest "
                        f"{max(ages.values()):.0f} s ago")
            out.append(BmcStatus(bmc, level, text, states))
        return out
