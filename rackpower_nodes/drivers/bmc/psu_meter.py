"""`RedfishPsuMeter`: a chassis' PSU meters read through its BMC (Redfish), read only.

It logs in the way `RedfishPowerCap` does (the DMTF `redfish` library, session or HTTP
Basic authentication, one try per request within `timeout_s`, answers capped at
MAX_BODY_BYTES), follows the chassis' link to its legacy Power resource and reads
`PowerSupplies[]` there (`psu_readings.parse_power_supplies`). It only ever GETs: nothing is
written to the BMC (a session login is the one POST, as for any Redfish client).

Every failure raises `BmcError` naming the URL, the request, and what went wrong: the
connection or a timeout, an HTTP error with the Redfish message, a chassis without a Power
resource, or an answer without usable readings (each problem named: a missing property, a
value that is not a number, a PSU reported absent). A failed request disconnects (the next
`read` logs in afresh); an answer that parses but cannot be used leaves the session as it is.
"""
from __future__ import annotations

import threading

from rackpower_nodes.drivers.bmc.psu_readings import PsuReading, parse_power_supplies
from rackpower_nodes.drivers.bmc.redfish import BmcError, _RedfishSession
from rackpower_nodes.drivers.bmc.schema import _link

__all__ = ["PsuReading", "RedfishPsuMeter"]


class RedfishPsuMeter(_RedfishSession):
    """The PSU meters of the chassis at ``url`` (http(s)://host[:port]/redfish/v1/Chassis/
    <id>); ``username``, ``password``, ``auth`` ("session" or "basic"), ``timeout_s`` (per
    connection and per read, s) and ``cafile`` as for `RedfishPowerCap`. Thread-safe."""

    def __init__(self, url: str, *, username: str = "", password: str = "",
                 auth: str = "session", timeout_s: float = 1.0, cafile: str | None = None):
        self._init_session(url, username, password, auth, timeout_s, cafile)
        self._power: str | None = None          # path of the Power resource
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedfishPsuMeter({self.url!r}, auth={self.auth!r})"

    def connect(self) -> None:
        """Log in and find the chassis' Power resource; BmcError when it cannot."""
        with self._lock:
            self._connect()

    def _connect(self) -> None:
        self._drop_client()
        self._client = self._log_in()
        chassis = self._get(self.chassis_path)
        path = _link(chassis, "Power")
        if path is None:
            raise self._fail("GET", self.chassis_path, "the chassis links no Power resource: "
                             "no PowerSupplies to read", answered=True)
        self._power = path

    def read(self) -> PsuReading:
        """The chassis' PSU readings now (connecting first when needed); BmcError naming
        what went wrong."""
        with self._lock:
            if self._client is None or self._power is None:
                self._connect()
            path = self._power
            doc = self._get(path)
            try:
                return parse_power_supplies(doc)
            except ValueError as exc:
                raise BmcError(f"{self._where('GET', path)}: {exc}") from None

    def close(self) -> None:
        """Log out (errors ignored) and drop the connection; idempotent."""
        with self._lock:
            self._drop_client()
