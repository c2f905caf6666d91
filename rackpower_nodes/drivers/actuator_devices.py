"""The devices the `pdu_actuator` writes, behind one :class:`~.pdu_link.PduLink`.

:func:`actuator_link` makes the link from the actuator's configuration: one target per PDU
(its outlets, in the components' order) and one one-outlet target per component whose server
has a BMC power cap (Redfish). :func:`cap_range_warnings` says where a BMC cannot hold a
component's floor or ceiling, and :func:`leave_static_split` writes the static (nameplate)
split, the safe state, and confirms it by reading every device back. :class:`LinkConnector`
connects a new link on a thread of its own, so the node's autostart never waits on a PDU that
is down. No rclpy: the node logs what these return and decides what to do.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

from rackpower_nodes.core.actuator_config import ActuatorConfig
from rackpower_nodes.core.allocation import Component
from rackpower_nodes.core.pdu_map import RegisterMap
from rackpower_nodes.drivers.bmc import RedfishPowerCap
from rackpower_nodes.drivers.pdu import open_pdu
from rackpower_nodes.drivers.pdu_link import PduLink, PduTarget

__all__ = ["LinkConnector", "actuator_link", "cap_range_warnings", "cap_targets",
           "configure_failed", "leave_static_split"]


def actuator_link(cfg: ActuatorConfig, maps: dict[str, RegisterMap],
                  bmc_password: str) -> PduLink:
    """A link over every PDU of `cfg` (`maps`: its register map by PDU name) and every BMC
    power cap; not connected yet (:meth:`PduLink.connect_all`)."""
    targets = []
    for spec in cfg.pdus:
        mine = [i for i, (pdu, _) in enumerate(cfg.outlets) if pdu == spec.name]
        client = open_pdu(spec.url, maps[spec.name], unit_id=spec.unit_id,
                          timeout_s=cfg.timeout_s)
        targets.append(PduTarget(spec.name, client,
                                 np.array([cfg.outlets[i][1] for i in mine], dtype=int),
                                 np.array(mine, dtype=int)))
    targets += cap_targets(cfg, bmc_password)
    ceilings = np.array([c.ceiling_w for c in cfg.components])
    return PduLink(targets, len(cfg.components), cfg.policy.budget_w, ceilings,
                   cfg.retry_s, verify_s=cfg.verify_s)


def cap_targets(cfg: ActuatorConfig, bmc_password: str) -> list[PduTarget]:
    """One one-outlet target per component with a BMC power cap."""
    pc = cfg.power_caps
    return [PduTarget(f"bmc:{cfg.names[i]}",
                      RedfishPowerCap(url, username=pc.username,
                                      password=bmc_password, api=pc.api,
                                      auth=pc.auth, timeout_s=pc.timeout_s,
                                      cafile=pc.cafile or None),
                      np.array([1]), np.array([i]), min_change_w=pc.min_change_w,
                      resolution_w=1.0, heartbeat_s=pc.heartbeat_s, kind="bmc")
            for i, url in enumerate(cfg.cap_urls) if url]


def cap_range_warnings(link: PduLink, components: tuple[Component, ...]) -> list[str]:
    """One line per BMC that cannot hold its component's floor or ceiling: below its
    allowable minimum the server cannot be capped as far as the policy may ask."""
    warnings = []
    for t in link.targets:
        if t.kind != "bmc":
            continue
        comp = components[int(t.index[0])]
        lo, hi = t.client.allowable_min_w, t.client.allowable_max_w
        if comp.floor_w < lo or comp.ceiling_w > hi:
            warnings.append(
                f"{t.name}: the BMC allows limits of {lo:g}..{hi:g} W but the component's "
                f"floor..ceiling is {comp.floor_w:g}..{comp.ceiling_w:g} W; allocations "
                "outside that range are held at the nearest limit and counted so")
    return warnings


STATIC_SPLIT_RETRY_S = 2.0    # how long a static split not confirmed is written again, s
STATIC_SPLIT_PAUSE_S = 0.1    # pause between two attempts, s


def leave_static_split(link: PduLink, safe: np.ndarray, budget_w: float, why: str,
                       retry_within_s: float = STATIC_SPLIT_RETRY_S) -> tuple[bool, str]:
    """Stop the link's worker, write the static split `safe` (W per component) to every
    device and confirm it by reading them back: (confirmed, what the devices hold). A split
    not confirmed (a device that did not answer in time, a value found other than the one
    written) is written and read back again until it is, for at most `retry_within_s` after
    the first attempt: one late answer from a busy PDU must not leave the rack unconfirmed.
    The text says how many attempts it took when more than one. Never raises: it runs on the
    way out."""
    link.stop()
    start, attempts = time.monotonic(), 0
    while True:
        attempts += 1
        try:
            link.write_now(safe, exact=True)
            conf = link.confirm(safe)
        except Exception as exc:      # best effort on the way out; never raise from here
            return False, f"{why}: writing the static split failed: {exc!r}"
        if conf.ok or time.monotonic() - start + STATIC_SPLIT_PAUSE_S > retry_within_s:
            break
        time.sleep(STATIC_SPLIT_PAUSE_S)
    held = conf.held_total_w
    holds = "unknown W" if math.isnan(held) else f"{held:.0f} W"
    tries = "" if attempts == 1 else f" ({attempts} attempts in {time.monotonic() - start:.1f} s)"
    if conf.ok:
        return True, (f"{why}: static split confirmed by read-back: devices hold {holds} of "
                      f"{budget_w:.0f} W{tries}")
    return False, (f"{why}: static split NOT confirmed by read-back ({safe.sum():.0f} W "
                   f"written, devices hold {holds} of {budget_w:.0f} W{tries}): "
                   + "; ".join(conf.differences))


def configure_failed(errors: list[str], retry_s: float | None) -> str:
    """The log line of a configure that failed on `errors` (one per device that did not
    answer); `retry_s`: the wait before the next attempt (s), None without autostart."""
    return ("configure failed, not answering: " + "; ".join(errors)
            + (f" (retrying every {retry_s:g} s)" if retry_s is not None else ""))


class LinkConnector:
    """Makes a link (`make()`) and connects every target (`PduLink.connect_all`) on a thread
    of its own; the caller polls :meth:`take` and never waits on a device. One attempt at a
    time; a link that did not connect is closed on that thread."""

    def __init__(self, make: Callable[[], PduLink]):
        self._make = make
        self._lock = threading.Lock()
        self._result: tuple[PduLink | None, list[str]] | None = None
        self._thread: threading.Thread | None = None
        self._started = -math.inf          # monotonic time the last attempt started, s

    @property
    def busy(self) -> bool:
        """An attempt is under way or its result has not been taken."""
        return self._thread is not None

    def start(self) -> None:
        """Start an attempt unless one is under way or not taken yet."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._attempt, name="pdu-connect",
                                            daemon=True)
            self._thread.start()

    def _attempt(self) -> None:
        link = None
        try:
            link = self._make()
            errors = link.connect_all()
        except Exception as exc:       # reported to the caller, never lost on this thread
            errors = [f"connecting failed: {exc!r}"]
        if errors and link is not None:
            link.close()
        with self._lock:
            self._result = (None if errors else link), errors

    def poll(self, retry_s: float) -> tuple[PduLink | None, list[str]] | None:
        """:meth:`take`; when it is None and no attempt is under way, a new attempt starts
        if the last one started `retry_s` (s) ago or more."""
        result = self.take()
        if (result is None and self._thread is None
                and time.monotonic() - self._started >= retry_s):
            self._started = time.monotonic()
            self.start()
        return result

    def take(self) -> tuple[PduLink | None, list[str]] | None:
        """The finished attempt's (connected link or None, one error per target that did not
        answer); None while none has finished. Taking it allows the next attempt."""
        with self._lock:
            result, self._result = self._result, None
        if result is not None:
            self._thread.join()         # it has stored its result: ends at once
            self._thread = None
        return result

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait up to `timeout_s` (s) for an attempt under way, and close a link it left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout_s)
            if thread.is_alive():       # a daemon, bounded by the clients' timeouts
                return
        result = self.take()
        if result is not None and result[0] is not None:
            result[0].close()
