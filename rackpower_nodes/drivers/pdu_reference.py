"""The PDUs' outlet power registers as an independent meter: `ReferenceReader`.

The `health_monitor` node checks the sensor board against a second meter that does not share
its faults. Where the rack's PDUs meter their outlets, `ReferenceReader` reads each wired
outlet's power register every period in a thread of its own (so a slow or dead PDU never
holds the node's executor) and hands ``(t_unix, {component: W})`` to a callback. Read only:
it never writes a register. A PDU that fails is reconnected at the next period; `state()`
says per PDU how the last read went, and each new failure is logged once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from rackpower_nodes.core.health_monitor_config import ReferencePdu
from rackpower_nodes.drivers.pdu import PduError, open_pdu

__all__ = ["ReferenceReader"]

_log = logging.getLogger(__name__)


class ReferenceReader:
    """Reads ``pdus`` (their wired outlets) every ``period_s`` and calls
    ``push(t_unix, {component: W})`` once per PDU read. ``timeout_s``: per request."""

    def __init__(self, pdus: Sequence[ReferencePdu], period_s: float, timeout_s: float,
                 push: Callable[[float, dict[str, float]], None]):
        self.pdus, self.period_s, self._push = tuple(pdus), float(period_s), push
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = {p.name: "not read yet" for p in self.pdus}
        self.reads = 0
        self._clients = {p.name: open_pdu(p.url, p.register_map, p.unit_id, timeout_s)
                         for p in self.pdus}

    def start(self) -> ReferenceReader:
        if self._clients and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pdu-reference",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for client in self._clients.values():
            client.close()

    def state(self) -> str:
        """How the last read of each PDU went, e.g. ``12 reads; pdu-a: ok; pdu-b: <error>``."""
        if not self._clients:
            return "none configured"
        return f"{self.reads} reads; " + "; ".join(f"{k}: {v}" for k, v in self._state.items())

    def read_once(self) -> None:
        """One read of every PDU (what the thread does each period)."""
        for pdu in self.pdus:
            client = self._clients[pdu.name]
            try:
                if not client.connected:
                    client.connect()
                readings = client.read_outlets(pdu.outlets)
            except PduError as exc:
                if self._state[pdu.name] != str(exc):
                    _log.warning("reference meter %s: %s", pdu.name, exc)
                self._state[pdu.name] = str(exc)
                continue
            self._push(time.time(), dict(zip(pdu.components,
                                             readings.power_w.astype(float).tolist())))
            self._state[pdu.name], self.reads = "ok", self.reads + 1

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.read_once()
