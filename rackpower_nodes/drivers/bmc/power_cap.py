"""`RedfishPowerCap`: a server's power limit through its BMC, as a one-outlet `PduClient`.

`RedfishPowerCap` is a `PduClient` with one outlet (outlet 1): the chassis. Metering is the
chassis' power reading, the allocation is its power limit, so the PDU link drives it like a
one-outlet PDU. It speaks Redfish through the DMTF `redfish` library (sessions or HTTP Basic
authentication, connection reuse) and finds the limit in either DMTF schema:

- EnvironmentMetrics (newer): `PowerWatts.Reading` and `PowerLimitWatts` {SetPoint,
  AllowableMin, AllowableMax, ControlMode}; ControlMode "Disabled" means no limit. Written as
  {"PowerLimitWatts": {"SetPoint": w, "ControlMode": "Automatic"}}.
- Power (legacy): `PowerControl[0]` {PowerConsumedWatts, PowerCapacityWatts, PowerLimit
  {LimitInWatts}}; LimitInWatts null means no limit. Written as
  {"PowerControl": [{"PowerLimit": {"LimitInWatts": w}}]}. The schema has no allowable range:
  it is [min_w or 0, max_w or PowerCapacityWatts or +inf].

The BMC is addressed by the chassis URI, `http(s)://host[:port]/redfish/v1/Chassis/<id>`.
`connect()` reads the service root, logs in, reads the chassis and picks the schema ("auto":
EnvironmentMetrics when it carries PowerLimitWatts, else Power). Writes are clamped into the
allowable range (the BMC's, narrowed by min_w/max_w when given) and sent with If-Match of the
newest ETag held; when another writer got there first (412, or 428 where the BMC insists on
If-Match) the resource is read again and the write retried once. A write returns the limit
now in force, as the BMC reports it.

Every failure (connection refused, timeout, HTTP error, credentials refused, an answer
without the expected properties) raises `BmcError`, a `PduError`, naming the URL, the request
(method and path), the HTTP status and the Redfish message; the client is then disconnected
(after a best-effort logout where the BMC still answers) and the next `connect()` logs in
afresh. A 401 on a request means the session is gone (expired, BMC restarted): the same.
A chassis without a power limit raises `PduCapabilityError`. Each request is tried once and
costs at most `timeout_s` per connection and per read (the library's own retries, 10 by
default with 1 s pauses, are turned off: the caller's control loop is the retry). An answer
over MAX_BODY_BYTES (1 MiB, decoded; by Content-Length or while reading) is refused the same
way, read no further than the cap and one 64 kB chunk.

Without `cafile` an https BMC's certificate is not verified (the library's default: BMCs
mostly carry self-signed certificates); give the CA bundle to verify it.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.drivers.bmc.redfish import BmcError, _RedfishSession
from rackpower_nodes.drivers.bmc.schema import (
    APIS, _LIMIT_NAMES, _limit_part, _link, _number, _state, _state_of)
from rackpower_nodes.drivers.pdu import OutletReadings, PduCapabilityError, PduClient


_RETRY_STATUSES = (412, 428)       # stale or missing If-Match: read again, write once more


def open_power_cap(url: str, **kwargs) -> RedfishPowerCap:
    """A `RedfishPowerCap` for the chassis at `url` (keyword arguments as its constructor);
    not yet connected."""
    return RedfishPowerCap(url, **kwargs)


class RedfishPowerCap(_RedfishSession, PduClient):
    """One server's power limit through its BMC, seen as a one-outlet device (outlet 1).

    Thread-safe (one request at a time).

    Args:
        url: the chassis URI, http(s)://host[:port]/redfish/v1/Chassis/<id>.
        username, password: the BMC account.
        api: "auto", "environment_metrics" or "power_control" (module docstring).
        auth: "session" (X-Auth-Token; logged out on `close`) or "basic".
        timeout_s: limit on connecting and on each read of an answer, s.
        min_w, max_w: narrow the range limits are clamped into, W (legacy schema: the range).
        cafile: CA bundle to verify an https BMC's certificate.
    """

    register_map = None

    def __init__(self, url: str, *, username: str = "", password: str = "",
                 api: str = "auto", auth: str = "session", timeout_s: float = 1.0,
                 min_w: float | None = None, max_w: float | None = None,
                 cafile: str | None = None):
        self._init_session(url, username, password, auth, timeout_s, cafile)
        if api not in ("auto", *APIS):
            raise ValueError(f"BMC {url}: api = {api!r}, expected auto, {', '.join(APIS)}")
        for name, value in (("min_w", min_w), ("max_w", max_w)):
            if value is not None and not (isinstance(value, (int, float)) and value >= 0
                                          and not math.isnan(value)):
                raise ValueError(f"BMC {url}: {name} = {value!r}, expected a number >= 0 W")
        if min_w is not None and max_w is not None and min_w > max_w:
            raise ValueError(f"BMC {url}: min_w = {min_w!r} > max_w = {max_w!r}")
        if min_w is not None and math.isinf(min_w):
            raise ValueError(f"BMC {url}: min_w = {min_w!r}, expected a finite number")
        self.api_requested = api
        self.min_w, self.max_w = min_w, max_w
        self._api: str | None = None
        self._resource: str | None = None         # path of the resource holding the limit
        self._etag: str | None = None
        self._range: tuple[float, float] | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (f"RedfishPowerCap({self.url!r}, api={self._api or self.api_requested!r}, "
                f"auth={self.auth!r})")

    # -- what connect() found ----------------------------------------------------------------
    @property
    def api(self) -> str | None:
        """The schema in use ("environment_metrics" or "power_control"); None before the
        first successful `connect()`."""
        return self._api

    @property
    def allowable_min_w(self) -> float | None:
        """Lowest limit written, W (after `connect()`)."""
        return None if self._range is None else self._range[0]

    @property
    def allowable_max_w(self) -> float | None:
        """Highest limit written, W (after `connect()`; inf when nothing bounds it)."""
        return None if self._range is None else self._range[1]

    @property
    def can_write_allocations(self) -> bool:
        return True

    # -- link ---------------------------------------------------------------------------------
    def connect(self) -> None:
        with self._lock:
            self.close()
            self._client = self._log_in()
            try:
                self._discover()
            except PduCapabilityError:
                self.close()
                raise

    def close(self) -> None:
        """Log out (errors ignored) and drop the connection; idempotent."""
        with self._lock:
            self._drop_client()

    def _discover(self) -> None:
        """Pick the schema holding the limit, note its ETag and the allowable range."""
        chassis = self._get(self.chassis_path)
        missing: list[str] = []
        for api, link in (("environment_metrics", "EnvironmentMetrics"), ("power_control",
                                                                          "Power")):
            if self.api_requested not in ("auto", api):
                continue
            path = _link(chassis, link)
            if path is None:
                missing.append(f"the chassis links no {link}")
                continue
            resp = self._request("GET", path)
            doc = self._doc(resp, "GET", path)
            if _limit_part(api, doc) is None:
                missing.append(f"{path} has no {_LIMIT_NAMES[api]}")
                continue
            try:
                self._range = self._allowable(api, doc, path)
            except ValueError as exc:
                raise self._fail("GET", path, f"unexpected answer: {exc}",
                                 answered=True) from exc
            self._api, self._resource = api, path
            self._etag = resp.getheader("ETag")
            return
        raise PduCapabilityError(f"BMC {self.url}: no power limit offered "
                                 f"(api={self.api_requested}): {'; '.join(missing)}")

    def _allowable(self, api: str, doc: dict, path: str) -> tuple[float, float]:
        part = _limit_part(api, doc)
        if api == "environment_metrics":
            lo = _number(part.get("AllowableMin"), "PowerLimitWatts/AllowableMin", 0.0)
            hi = _number(part.get("AllowableMax"), "PowerLimitWatts/AllowableMax", math.inf)
            if self.min_w is not None:
                lo = max(lo, self.min_w)
            if self.max_w is not None:
                hi = min(hi, self.max_w)
        else:
            capacity = _number(doc["PowerControl"][0].get("PowerCapacityWatts"),
                               "PowerControl[0].PowerCapacityWatts", math.inf)
            lo = 0.0 if self.min_w is None else float(self.min_w)
            hi = capacity if self.max_w is None else float(self.max_w)
        if lo > hi:
            raise PduCapabilityError(
                f"BMC {self.url}: {path} allows limits {lo:g}..{hi:g} W: nothing to write "
                f"(min_w={self.min_w}, max_w={self.max_w} outside what the BMC allows?)")
        return lo, hi

    def _read_state(self) -> tuple[float, float | None]:
        """(reading W, limit W or None) from a fresh GET of the limit resource; keeps the
        ETag."""
        path = self._resource_path("GET")
        resp = self._request("GET", path)
        doc = self._doc(resp, "GET", path)
        self._etag = resp.getheader("ETag")
        return self._parse(doc, "GET", path)

    def _resource_path(self, method: str) -> str:
        if self._client is None or self._resource is None:
            raise BmcError(f"{self._where(method, self.chassis_path)}: not connected, call "
                           f"connect() first")
        return self._resource

    def _parse(self, doc: dict, method: str, path: str) -> tuple[float, float | None]:
        try:
            return _state(self._api, doc)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise self._fail(method, path, f"unexpected answer: {exc}",
                             answered=True) from exc

    # -- PduClient ----------------------------------------------------------------------------
    def read_outlets(self, outlets: Sequence[int]) -> OutletReadings:
        idx = self._outlets(outlets)
        with self._lock:
            reading = self._read_state()[0] if idx.size else math.nan
        nan = np.full(idx.size, np.nan)
        return OutletReadings(idx, np.full(idx.size, reading), nan, nan.copy(), None)

    def read_allocations(self, outlets: Sequence[int]) -> np.ndarray:
        idx = self._outlets(outlets)
        if not idx.size:
            return np.zeros(0)
        with self._lock:
            limit = self._read_state()[1]
        return np.full(idx.size, math.inf if limit is None else limit)

    def write_allocations(self, outlets: Sequence[int], watts: Sequence[float]) -> np.ndarray:
        """Set the power limit to `watts` clamped into [allowable_min_w, allowable_max_w];
        returns the limit now in force (W, one per outlet asked; inf if the BMC shows none).
        With outlet 1 named more than once the last value counts."""
        idx = self._outlets(outlets)
        w = np.asarray(watts, dtype=np.float64).reshape(-1)
        if w.size != idx.size:
            raise ValueError(f"watts: {w.size} values for {idx.size} outlets, expected one each")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"watts = {w.tolist()}: expected finite allocations >= 0 W")
        if not idx.size:
            return np.zeros(0)
        with self._lock:
            path = self._resource_path("PATCH")
            lo, hi = self._range
            target = float(min(max(w[-1], lo), hi))
            resp = self._patch(path, target, allow=_RETRY_STATUSES)
            if resp.status in _RETRY_STATUSES:
                self._read_state()
                resp = self._patch(path, target)
            limit = self._after_patch(resp, path)
        return np.full(idx.size, math.inf if limit is None else limit)

    def _patch(self, path: str, watts: float, allow: Sequence[int] = ()):
        if self._api == "environment_metrics":
            body = {"PowerLimitWatts": {"SetPoint": watts, "ControlMode": "Automatic"}}
        else:
            body = {"PowerControl": [{"PowerLimit": {"LimitInWatts": watts}}]}
        headers = {"If-Match": self._etag} if self._etag else None
        return self._request("PATCH", path, body=body, headers=headers, allow=allow)

    def _after_patch(self, resp, path: str) -> float | None:
        """The limit in force after a successful PATCH: from the answer when it carries the
        resource and its new ETag, else from one more GET."""
        etag = resp.getheader("ETag")
        state = _state_of(self._api, resp) if resp.status == 200 and etag else None
        if state is not None:
            self._etag = etag
            return state[1]
        self._etag = None
        return self._read_state()[1]

    def set_outlet(self, outlet: int, on: bool) -> None:
        raise PduCapabilityError(f"BMC {self.url}: a power limit cannot switch the server on "
                                 f"or off (outlet switching is not offered)")

    def _outlets(self, outlets: Sequence[int]) -> np.ndarray:
        idx = np.asarray(outlets).reshape(-1)
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or np.any(idx != 1)):
            raise ValueError(f"outlets = {idx.tolist()}: expected outlet 1 (a BMC power "
                             f"limit is one outlet)")
        return idx.astype(np.int64)
