"""The simulated BMC itself: `SimBmcServer`, its chassis limits, lifecycle and routing.

The server holds one `_Chassis` per chassis id and the sessions, all under one lock; requests
arrive from the HTTP transport (`rackpower_nodes.sim.bmc.http_server`) on its threads and are
routed here to the chassis resources (their documents and PATCH checks in
`rackpower_nodes.sim.bmc.redfish`) or to the SessionService (`rackpower_nodes.sim.bmc.sessions`).
The package docstring (`rackpower_nodes.sim.bmc`) describes the service as a client sees it.
"""
from __future__ import annotations

import logging
import math
import re
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from rackpower_nodes.sim.bmc.http_server import _HttpServer
from rackpower_nodes.sim.bmc.redfish import (
    _CHASSIS_PATH, _ROOT, _SESSIONS, APIS, _allow, _Chassis, _error_doc, _json, _Refusal, _Reply,
    _Request, _service_root)
from rackpower_nodes.sim.bmc.resources import _ChassisResources
from rackpower_nodes.sim.bmc.sessions import _SessionAuth

__all__ = ["SimBmcServer"]

_log = logging.getLogger(__name__)


def _per_chassis(name: str, value, chassis: Sequence[str], check) -> dict:
    """{chassis: checked value} from one value or a mapping of some chassis."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(chassis))
        if unknown:
            raise ValueError(f"{name}: unknown chassis {unknown}, expected some of "
                             f"{list(chassis)}")
        return {c: check(f"{name}[{c!r}]", value[c]) for c in value}
    v = check(name, value)
    return {c: v for c in chassis}


def _check_api(name: str, value) -> str:
    if value not in APIS:
        raise ValueError(f"{name} = {value!r}: expected one of {', '.join(APIS)}")
    return value


def _check_watts(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} = {value!r}: expected a finite number >= 0 W")
    return float(value)


def _check_psus(name: str, value) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} = {value!r}: expected the capacity of each PSU, W")
    return tuple(_check_watts(f"{name}[{i}]", v) for i, v in enumerate(value))


class SimBmcServer(_ChassisResources, _SessionAuth):
    """A Redfish BMC on loopback for `chassis` (ids), see the package docstring.

    Args:
        chassis: chassis ids, as they appear in `/redfish/v1/Chassis/{id}`.
        host, port: where to listen; port 0 picks a free port (`port` tells it afterwards and
            a restart reuses it).
        api: which schema carries each chassis' limit: one of `APIS`, or a mapping chassis ->
            api (chassis not named get "environment_metrics").
        allowable_min_w, allowable_max_w: the accepted range of limits, W (one value or per
            chassis; chassis not named get 0 and 1000 W).
        power_w: metered power of a chassis, W, asked on every GET (None: 0 W).
        on_limit: called with (chassis, limit W or None) after the limit in force of a chassis
            changed, outside the server's lock and before the PATCH is answered.
        username, password: the one account.
        require_if_match: refuse a PATCH without If-Match (428), as some BMCs do.
        tls: a server-side `ssl.SSLContext` (certificate loaded) to serve HTTPS, as real BMCs
            do; None serves plain HTTP.
        psus: chassis -> the rated capacity of each of its power supplies, W: those chassis
            serve `PowerSupplies[]` in their legacy Power resource (also where the limit is
            in EnvironmentMetrics), with the readings of `set_psu_readings` (null before).
    """

    def __init__(self, chassis: Sequence[str], *, host: str = "127.0.0.1", port: int = 0,
                 api: str | Mapping[str, str] = "environment_metrics",
                 allowable_min_w: float | Mapping[str, float] = 0.0,
                 allowable_max_w: float | Mapping[str, float] = 1000.0,
                 power_w: Callable[[str], float] | None = None,
                 on_limit: Callable[[str, float | None], None] | None = None,
                 username: str = "admin", password: str = "rackpower",
                 require_if_match: bool = False, tls: ssl.SSLContext | None = None,
                 psus: Mapping[str, Sequence[float]] | None = None):
        ids = [chassis] if isinstance(chassis, str) else list(chassis)
        bad = [c for c in ids if not isinstance(c, str) or not re.fullmatch(r"[\w.\-]+", c)]
        if not ids or bad or len(set(ids)) != len(ids):
            raise ValueError(f"chassis = {chassis!r}: expected one or more distinct ids of "
                             f"letters, digits, '_', '.', '-'")
        apis = dict.fromkeys(ids, "environment_metrics") | _per_chassis("api", api, ids,
                                                                          _check_api)
        lows = dict.fromkeys(ids, 0.0) | _per_chassis("allowable_min_w", allowable_min_w, ids,
                                                      _check_watts)
        highs = dict.fromkeys(ids, 1000.0) | _per_chassis("allowable_max_w", allowable_max_w,
                                                          ids, _check_watts)
        for c in ids:
            if lows[c] > highs[c]:
                raise ValueError(f"chassis {c}: allowable_min_w {lows[c]:g} W > "
                                 f"allowable_max_w {highs[c]:g} W")
        self._chassis = {c: _Chassis(apis[c], lows[c], highs[c]) for c in ids}
        for c, capacities in _per_chassis("psus", dict(psus or {}), ids, _check_psus).items():
            self._chassis[c].psu_capacity_w = capacities
        self.host, self._port = host, int(port)
        self._power_w = power_w
        self._on_limit = on_limit
        self._username, self._password = username, password
        self.require_if_match = bool(require_if_match)
        self._tls = tls
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[str, str]] = {}   # token -> (session id, user)
        self._session_chassis: dict[str, set[str]] = {}   # token -> chassis it touched
        self.boots = 0                                    # reboot() calls
        self._next_session = 1
        self._fail_left, self._fail_status = 0, 503
        self._delay_s = 0.0
        self._seen: list[tuple[str, str]] = []     # (method, path) of every request
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._route_table()

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The TCP port (the real one after `start` when 0 was asked)."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._tls is not None else 'http'}://{host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def chassis_url(self, chassis_id: str) -> str:
        return f"{self.url}{_ROOT}/Chassis/{chassis_id}"

    def start(self) -> SimBmcServer:
        """Listen (requests are served on daemon threads); OSError when the port cannot be
        bound. Idempotent; may follow `stop()` (on the same port)."""
        if self._httpd is not None:
            return self
        httpd = _HttpServer((self.host, self._port), self)
        if self._tls is not None:       # the handshake runs in the handler, on first read
            httpd.socket = self._tls.wrap_socket(httpd.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self._port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"sim-bmc-{self._port}", daemon=True)
        thread.start()
        self._httpd, self._thread = httpd, thread
        _log.info("simulated BMC on %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listener and every open connection and forget the sessions (a BMC
        reboot); limits are kept. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        httpd.drop_connections()
        thread.join(5.0)
        with self._lock:
            self._sessions.clear()
            self._session_chassis.clear()

    def __enter__(self) -> SimBmcServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state and fault injection -----------------------------------------------------------
    def limit_w(self, chassis_id: str) -> float | None:
        """The limit in force on `chassis_id`, W (None: no limit); KeyError if unknown."""
        with self._lock:
            return self._get_chassis(chassis_id).limit_w

    def reset_limits(self, chassis_ids: Sequence[str] | None = None) -> None:
        """Every chassis (or those of `chassis_ids`) back to no limit (on_limit is told for
        those that had one)."""
        changed = []
        with self._lock:
            ids = list(self._chassis) if chassis_ids is None else list(chassis_ids)
            for cid in ids:
                ch = self._get_chassis(cid)
                if ch.limit_w is not None:
                    changed.append(cid)
                ch.set_point_w, ch.enabled = None, False
                ch.version += 1
        for cid in changed:
            self._notify(cid, None)

    def reboot(self, chassis_id: str | None = None) -> None:
        """A BMC power cycle: the limit of `chassis_id` (None: of every chassis) back to its
        power-on default, no limit, and the sessions that used that chassis forgotten (their
        next request gets 401). With None every session goes and every open connection is
        dropped, as when the one BMC serving them all restarts. KeyError for an unknown id."""
        ids = list(self._chassis) if chassis_id is None else [chassis_id]
        with self._lock:
            for cid in ids:
                self._get_chassis(cid)
            gone = [t for t, used in self._session_chassis.items()
                    if chassis_id is None or chassis_id in used]
            for token in gone:
                self._sessions.pop(token, None)
                self._session_chassis.pop(token, None)
            self.boots += 1
        if chassis_id is None and self._httpd is not None:
            self._httpd.drop_connections()
        self.reset_limits(ids)
        _log.info("simulated BMC %s rebooted: limits of %s back to none, %d session(s) gone",
                  self.url, ids, len(gone))

    def set_psu_readings(self, chassis_id: str, input_w: Sequence[float],
                         output_w: Sequence[float]) -> None:
        """New meter readings of the chassis' PSUs (one input and one output power each, W;
        one that is not finite is served as null), served from now on; KeyError for an
        unknown chassis, ValueError for one without PSUs or a count that does not match."""
        with self._lock:
            ch = self._get_chassis(chassis_id)
            n = len(ch.psu_capacity_w)
            if not n or len(input_w) != n or len(output_w) != n:
                raise ValueError(f"chassis {chassis_id}: {len(input_w)} inputs and "
                                 f"{len(output_w)} outputs for {n} PSUs")
            ch.psu_in_w, ch.psu_out_w = (tuple(float(w) if math.isfinite(w) else None
                                               for w in ws) for ws in (input_w, output_w))

    def fail_requests(self, n: int, status: int = 503) -> None:
        """The next `n` authenticated requests answer `status` with a Redfish error body."""
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status = {status!r}: expected an HTTP error status 400..599")
        with self._lock:
            self._fail_left, self._fail_status = max(0, int(n)), int(status)

    def requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests arrived (of `method` to `path` when given), since start-up."""
        with self._lock:
            return sum(1 for m, p in self._seen
                       if (method is None or m == method) and (path is None or p == path))

    def set_delay(self, seconds: float) -> None:
        """Every response waits `seconds` before it is sent (a slow BMC); 0 to stop."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds = {seconds!r}: expected a finite number >= 0")
        with self._lock:
            self._delay_s = float(seconds)

    def _get_chassis(self, chassis_id: str) -> _Chassis:
        try:
            return self._chassis[chassis_id]
        except KeyError:
            raise KeyError(f"unknown chassis {chassis_id!r}, expected one of "
                           f"{list(self._chassis)}") from None

    def _notify(self, chassis_id: str, limit: float | None) -> None:
        if self._on_limit is None:
            return
        try:
            self._on_limit(chassis_id, limit)
        except Exception:  # noqa: BLE001 - the simulation's callback; the BMC carries on
            _log.exception("simulated BMC: on_limit(%r, %r) failed", chassis_id, limit)

    def _delay(self) -> float:
        with self._lock:
            return self._delay_s

    # -- request handling (called on the server's threads) ------------------------------------
    def _handle(self, method: str, target: str, headers: Mapping[str, str],
                body: bytes) -> _Reply:
        """Answer one request; every refusal becomes a Redfish error reply."""
        path = urlsplit(target).path.rstrip("/") or "/"
        with self._lock:
            self._seen.append((method, path))
        try:
            return self._dispatch(method, path, _Request(headers, body))
        except _Refusal as r:
            return _Reply(r.status, _error_doc(r.status, r.message_id, r.message), r.headers)
        except Exception as exc:  # noqa: BLE001 - e.g. the power_w callback; answered as 500
            _log.exception("simulated BMC: %s %s failed", method, path)
            return _Reply(500, _error_doc(500, "InternalError", f"The request failed: "
                                          f"{type(exc).__name__}: {exc}."))

    def _dispatch(self, method: str, path: str, req: _Request) -> _Reply:
        if path == "/redfish":
            _allow(method, ("GET",))
            return _Reply(200, {"v1": f"{_ROOT}/"})
        if path == _ROOT:
            _allow(method, ("GET",))
            return _Reply(200, _service_root())
        if path == _SESSIONS and method == "POST":
            return self._create_session(_json(req.body))
        token = self._authenticate(req.headers)
        self._injected_failure()
        m = _CHASSIS_PATH.match(path)
        if token is not None and m is not None:
            with self._lock:
                self._session_chassis.setdefault(token, set()).add(m.group(1))
        for pattern, methods in self._routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            _allow(method, tuple(methods))
            return methods[method](req, *m.groups())
        raise _Refusal(404, "ResourceMissingAtURI", f"The resource at the URI {path} was not "
                       f"found.")

    def _route_table(self) -> list[tuple[re.Pattern, dict[str, Callable | None]]]:
        """(path pattern, {method: handler(request, *path ids)}); POST of a session is
        answered before authentication, hence no handler here."""
        cid = r"/([\w.\-]+)"
        return [
            (re.compile(f"{_ROOT}/Chassis"), {"GET": self._chassis_collection}),
            (re.compile(f"{_ROOT}/Chassis{cid}"), {"GET": self._chassis_doc}),
            (re.compile(f"{_ROOT}/Chassis{cid}/EnvironmentMetrics"),
             {"GET": self._get_metrics, "PATCH": self._patch_metrics}),
            (re.compile(f"{_ROOT}/Chassis{cid}/Power"),
             {"GET": self._get_power, "PATCH": self._patch_power}),
            (re.compile(f"{_ROOT}/SessionService"), {"GET": self._session_service}),
            (re.compile(_SESSIONS), {"GET": self._session_collection, "POST": None}),
            (re.compile(f"{_SESSIONS}/(\\w+)"), {"GET": self._session_doc,
                                                 "DELETE": self._delete_session}),
        ]

    def _injected_failure(self) -> None:
        with self._lock:
            if self._fail_left <= 0:
                return
            self._fail_left -= 1
            status = self._fail_status
        raise _Refusal(status, "ServiceTemporarilyUnavailable" if status == 503
                       else "InternalError", f"Simulated failure: the service answered HTTP "
                       f"{status} on request.")
