"""The simulator's BMC: a small Redfish service on loopback holding chassis power limits.

`SimBmcServer` plays the baseboard management controller of one or more servers (chassis)
over real HTTP (stdlib `ThreadingHTTPServer`, HTTP/1.1 keep-alive), so that the Redfish
client in `rackpower_nodes.drivers.bmc` and independent tools such as curl talk to it the way
they talk to a real BMC. Each chassis offers its power limit in one of the two DMTF schemas:

- "environment_metrics": `.../Chassis/{id}/EnvironmentMetrics` with `PowerWatts.Reading` and
  `PowerLimitWatts` {SetPoint, AllowableMin, AllowableMax, ControlMode}; ControlMode
  "Disabled" means no limit in force. A PATCH of SetPoint alone turns a disabled limit on
  ("Automatic").
- "power_control" (legacy): `.../Chassis/{id}/Power` with `PowerControl[0]`
  {PowerConsumedWatts, PowerCapacityWatts (= the allowable maximum), PowerLimit
  {LimitInWatts, LimitException, CorrectionInMs}}; LimitInWatts null means no limit.
- "mixed": the limit in Power as above, beside an EnvironmentMetrics resource with the
  reading only, as BMCs between schema versions have it (clients must look for the limit,
  not just for the link).
- "both": both resources with the limit (one limit, two views).
- "none": metering only (EnvironmentMetrics without PowerLimitWatts): no power limit.

Service root (`/redfish/v1/`) and `/redfish` answer without credentials; sessions are created
by POST to `/redfish/v1/SessionService/Sessions` (201, X-Auth-Token and Location headers) and
ended by DELETE of their URI; every other request needs X-Auth-Token or HTTP Basic
credentials, else 401. GETs of the limit resources carry an ETag that versions the limit
(readings do not change it; every successful PATCH does); a PATCH with a stale If-Match gets
412, and with `require_if_match` a PATCH without one gets 428. PATCH bodies are checked like a
strict BMC checks them (unknown or read-only properties, wrong types, values outside
[AllowableMin, AllowableMax] -> 400 with a Redfish error body naming the property).

Limits survive `stop()`/`start()` (the service restarting) while sessions do not;
`reset_limits()` clears them. `reboot(chassis_id)` plays a BMC power cycle: the chassis'
limit back to its power-on default (none) and the sessions that used that chassis gone (with
no id: every chassis, every session and every open connection). Like a real BMC it takes a
PATCH from any client holding the credentials (curl included), not only from rackpower.
`fail_requests` and `set_delay` inject failures and slowness for client tests.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import re
import secrets
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["SimBmcServer", "APIS"]

APIS = ("environment_metrics", "power_control", "mixed", "both", "none")

_log = logging.getLogger(__name__)

_ROOT = "/redfish/v1"
_SESSIONS = f"{_ROOT}/SessionService/Sessions"
_REGISTRY = "Base.1.8"
_MAX_BODY = 64 * 1024
_CONTROL_MODES = ("Automatic", "Override", "Manual", "Disabled")
_LIMIT_EXCEPTIONS = ("NoAction", "HardPowerOff", "LogEventOnly", "Oem")
_CHASSIS_PATH = re.compile(rf"{_ROOT}/Chassis/([\w.\-]+)")


class _Refusal(Exception):
    """A request answered with a Redfish error: HTTP status, MessageId and message."""

    def __init__(self, status: int, message_id: str, message: str,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message_id, self.message = status, message_id, message
        self.headers = headers or {}


@dataclass
class _Reply:
    status: int
    doc: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    headers: Mapping[str, str]
    body: bytes


@dataclass
class _Chassis:
    api: str
    allowable_min_w: float
    allowable_max_w: float
    set_point_w: float | None = None
    enabled: bool = False
    limit_exception: str = "LogEventOnly"
    correction_ms: int = 1000
    version: int = 1                  # bumps with every successful PATCH: the ETag

    @property
    def limit_w(self) -> float | None:
        return self.set_point_w if self.enabled else None

    def has(self, resource: str) -> bool:
        """Whether the chassis serves `resource` ("EnvironmentMetrics" or "Power")."""
        if resource == "EnvironmentMetrics":
            return self.api != "power_control"
        return self.api in ("power_control", "mixed", "both")

    def limits_in(self, resource: str) -> bool:
        """Whether `resource` carries the power limit."""
        if resource == "EnvironmentMetrics":
            return self.api in ("environment_metrics", "both")
        return self.api in ("power_control", "mixed", "both")


def _error_doc(status: int, message_id: str, message: str) -> dict:
    return {"error": {"code": f"{_REGISTRY}.GeneralError", "message": message,
                      "@Message.ExtendedInfo": [{
                          "@odata.type": "#Message.v1_1_1.Message",
                          "MessageId": f"{_REGISTRY}.{message_id}", "Message": message,
                          "MessageSeverity": "Critical" if status >= 500 else "Warning"}]}}


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


def _is_watts(value) -> bool:
    """A JSON number that is a finite power >= 0 (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:
        return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class SimBmcServer:
    """A Redfish BMC on loopback for `chassis` (ids), see the module docstring.

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
    """

    def __init__(self, chassis: Sequence[str], *, host: str = "127.0.0.1", port: int = 0,
                 api: str | Mapping[str, str] = "environment_metrics",
                 allowable_min_w: float | Mapping[str, float] = 0.0,
                 allowable_max_w: float | Mapping[str, float] = 1000.0,
                 power_w: Callable[[str], float] | None = None,
                 on_limit: Callable[[str, float | None], None] | None = None,
                 username: str = "admin", password: str = "rackpower",
                 require_if_match: bool = False, tls: ssl.SSLContext | None = None):
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
            self._allow(method, ("GET",))
            return _Reply(200, {"v1": f"{_ROOT}/"})
        if path == _ROOT:
            self._allow(method, ("GET",))
            return _Reply(200, self._service_root())
        if path == _SESSIONS and method == "POST":
            return self._create_session(self._json(req.body))
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
            self._allow(method, tuple(methods))
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

    @staticmethod
    def _allow(method: str, methods: tuple[str, ...]) -> None:
        if method not in methods:
            raise _Refusal(405, "OperationNotAllowed", f"The HTTP method {method} is not "
                           f"allowed here; allowed: {', '.join(methods)}.",
                           {"Allow": ", ".join(methods)})

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Refusal(400, "MalformedJSON", f"The request body submitted was malformed "
                           f"JSON and could not be parsed: {exc}.") from None
        if not isinstance(doc, dict):
            raise _Refusal(400, "MalformedJSON", "The request body must be a JSON object.")
        return doc

    # -- authentication -----------------------------------------------------------------------
    def _credentials_ok(self, user: str, password: str) -> bool:
        return (hmac.compare_digest(user.encode(), self._username.encode())
                and hmac.compare_digest(password.encode(), self._password.encode()))

    def _authenticate(self, headers) -> str | None:
        """The session token of an authenticated request (None: Basic credentials);
        refused with 401 otherwise."""
        token = headers.get("X-Auth-Token")
        if token is not None:
            with self._lock:
                if token in self._sessions:
                    return token
        auth = headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", None
            if password is not None and self._credentials_ok(user, password):
                return None
        raise _Refusal(401, "NoValidSession", "There is no valid session established with "
                       "the implementation (X-Auth-Token or Basic credentials required).",
                       {"WWW-Authenticate": 'Basic realm="rackpower-sim-bmc"'})

    def _injected_failure(self) -> None:
        with self._lock:
            if self._fail_left <= 0:
                return
            self._fail_left -= 1
            status = self._fail_status
        raise _Refusal(status, "ServiceTemporarilyUnavailable" if status == 503
                       else "InternalError", f"Simulated failure: the service answered HTTP "
                       f"{status} on request.")

    def _create_session(self, doc: dict) -> _Reply:
        user, password = doc.get("UserName"), doc.get("Password")
        for name, value in (("UserName", user), ("Password", password)):
            if not isinstance(value, str):
                raise _Refusal(400, "PropertyMissing", f"The property {name} is a required "
                               f"property and must be included in the request.")
        if not self._credentials_ok(user, password):
            raise _Refusal(401, "ResourceAtUriUnauthorized", f"While accessing the resource "
                           f"at {_SESSIONS}, the service received an authorization error: "
                           f"invalid user name or password.")
        token = secrets.token_hex(16)
        with self._lock:
            sid = str(self._next_session)
            self._next_session += 1
            self._sessions[token] = (sid, user)
        location = f"{_SESSIONS}/{sid}"
        return _Reply(201, self._session_resource(sid, user),
                      {"X-Auth-Token": token, "Location": location})

    # -- documents ----------------------------------------------------------------------------
    @staticmethod
    def _service_root() -> dict:
        return {"@odata.id": f"{_ROOT}/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
                "Id": "RootService", "Name": "rackpower simulated BMC",
                "RedfishVersion": "1.17.0", "UUID": "8f5e2c43-7a42-4b1e-9c3a-72706f776572",
                "Chassis": {"@odata.id": f"{_ROOT}/Chassis"},
                "SessionService": {"@odata.id": f"{_ROOT}/SessionService"},
                "Links": {"Sessions": {"@odata.id": _SESSIONS}}}

    def _chassis_collection(self, req: _Request) -> _Reply:
        members = [{"@odata.id": f"{_ROOT}/Chassis/{c}"} for c in self._chassis]
        return _Reply(200, {"@odata.id": f"{_ROOT}/Chassis",
                            "@odata.type": "#ChassisCollection.ChassisCollection",
                            "Name": "Chassis Collection", "Members": members,
                            "Members@odata.count": len(members)})

    def _lookup(self, cid: str) -> _Chassis:
        ch = self._chassis.get(cid)
        if ch is None:
            raise _Refusal(404, "ResourceMissingAtURI", f"The resource at the URI "
                           f"{_ROOT}/Chassis/{cid} was not found.")
        return ch

    def _resource(self, cid: str, resource: str) -> _Chassis:
        ch = self._lookup(cid)
        if not ch.has(resource):
            raise _Refusal(404, "ResourceMissingAtURI", f"The resource at the URI "
                           f"{_ROOT}/Chassis/{cid}/{resource} was not found.")
        return ch

    def _chassis_doc(self, req: _Request, cid: str) -> _Reply:
        ch = self._lookup(cid)
        base = f"{_ROOT}/Chassis/{cid}"
        doc = {"@odata.id": base, "@odata.type": "#Chassis.v1_21_0.Chassis", "Id": cid,
               "Name": f"Chassis {cid}", "ChassisType": "RackMount", "PowerState": "On",
               "Status": {"State": "Enabled", "Health": "OK"}}
        for resource in ("EnvironmentMetrics", "Power"):
            if ch.has(resource):
                doc[resource] = {"@odata.id": f"{base}/{resource}"}
        return _Reply(200, doc)

    def _reading(self, cid: str) -> float | None:
        """The metered power, W; None (shown as null) when the callback gives no number."""
        value = 0.0 if self._power_w is None else float(self._power_w(cid))
        return value if math.isfinite(value) else None

    @staticmethod
    def _etag(cid: str, ch: _Chassis) -> str:
        return f'"{cid}-{ch.version}"'

    def _metrics_reply(self, cid: str, ch: _Chassis, reading: float | None) -> _Reply:
        base = f"{_ROOT}/Chassis/{cid}"
        doc = {"@odata.id": f"{base}/EnvironmentMetrics",
               "@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
               "Id": "EnvironmentMetrics", "Name": f"Chassis {cid} Environment Metrics",
               "PowerWatts": {"Reading": reading}}
        if ch.limits_in("EnvironmentMetrics"):
            doc["PowerLimitWatts"] = {
                "SetPoint": ch.set_point_w, "AllowableMin": ch.allowable_min_w,
                "AllowableMax": ch.allowable_max_w,
                "ControlMode": "Automatic" if ch.enabled else "Disabled"}
        return _Reply(200, doc, {"ETag": self._etag(cid, ch)})

    def _power_reply(self, cid: str, ch: _Chassis, reading: float | None) -> _Reply:
        base = f"{_ROOT}/Chassis/{cid}/Power"
        control = {"@odata.id": f"{base}#/PowerControl/0", "MemberId": "0",
                   "Name": "Server Power Control", "PowerConsumedWatts": reading,
                   "PowerCapacityWatts": ch.allowable_max_w,
                   "PowerLimit": {"LimitInWatts": ch.limit_w,
                                  "LimitException": ch.limit_exception,
                                  "CorrectionInMs": ch.correction_ms}}
        doc = {"@odata.id": base, "@odata.type": "#Power.v1_7_1.Power", "Id": "Power",
               "Name": "Power", "PowerControl": [control], "PowerControl@odata.count": 1}
        return _Reply(200, doc, {"ETag": self._etag(cid, ch)})

    def _get_metrics(self, req: _Request, cid: str) -> _Reply:
        self._resource(cid, "EnvironmentMetrics")
        reading = self._reading(cid)
        with self._lock:
            return self._metrics_reply(cid, self._chassis[cid], reading)

    def _get_power(self, req: _Request, cid: str) -> _Reply:
        self._resource(cid, "Power")
        reading = self._reading(cid)
        with self._lock:
            return self._power_reply(cid, self._chassis[cid], reading)

    # -- PATCH --------------------------------------------------------------------------------
    def _patch_metrics(self, req: _Request, cid: str) -> _Reply:
        ch = self._resource(cid, "EnvironmentMetrics")
        doc = self._json(req.body)
        if not ch.limits_in("EnvironmentMetrics"):
            _unknown(doc, (), "")
        _unknown(doc, ("PowerLimitWatts",), "", read_only=("PowerWatts", "Id", "Name"))
        plw = doc.get("PowerLimitWatts")
        if not isinstance(plw, dict) or not plw:
            raise _Refusal(400, "PropertyValueTypeError", "The value for the property "
                           "PowerLimitWatts must be an object with SetPoint and/or "
                           "ControlMode.")
        _unknown(plw, ("SetPoint", "ControlMode"), "PowerLimitWatts/",
                 read_only=("AllowableMin", "AllowableMax", "Reading", "DataSourceUri"))
        set_point = plw.get("SetPoint", ...)
        mode = plw.get("ControlMode", ...)
        if mode is not ... and mode not in _CONTROL_MODES:
            raise _Refusal(400, "PropertyValueNotInList", f"The value {json.dumps(mode)} for "
                           f"the property PowerLimitWatts/ControlMode is not in the list of "
                           f"acceptable values ({', '.join(_CONTROL_MODES)}).")
        if set_point is not ...:
            self._check_limit(ch, set_point, "PowerLimitWatts/SetPoint")

        def apply(c: _Chassis) -> None:
            if set_point is not ...:
                c.set_point_w = float(set_point)
            if mode is not ...:
                c.enabled = mode != "Disabled"
            elif set_point is not ...:
                c.enabled = True
        return self._commit(cid, req.headers, apply, self._metrics_reply)

    def _patch_power(self, req: _Request, cid: str) -> _Reply:
        ch = self._resource(cid, "Power")
        doc = self._json(req.body)
        _unknown(doc, ("PowerControl",), "",
                 read_only=("Id", "Name", "Voltages", "PowerSupplies"))
        controls = doc.get("PowerControl")
        if not isinstance(controls, list) or len(controls) != 1 \
                or not isinstance(controls[0], dict):
            raise _Refusal(400, "PropertyValueTypeError", "The value for the property "
                           "PowerControl must be an array of one object (this chassis has "
                           "one PowerControl member).")
        _unknown(controls[0], ("PowerLimit",), "PowerControl/0/",
                 read_only=("MemberId", "Name", "PowerConsumedWatts", "PowerCapacityWatts"))
        limit = controls[0].get("PowerLimit")
        if not isinstance(limit, dict) or not limit:
            raise _Refusal(400, "PropertyValueTypeError", "The value for the property "
                           "PowerControl/0/PowerLimit must be a non-empty object.")
        where = "PowerControl/0/PowerLimit/"
        _unknown(limit, ("LimitInWatts", "LimitException", "CorrectionInMs"), where)
        watts = limit.get("LimitInWatts", ...)
        if watts is not ... and watts is not None:
            self._check_limit(ch, watts, where + "LimitInWatts")
        exc = limit.get("LimitException", ...)
        if exc is not ... and exc not in _LIMIT_EXCEPTIONS:
            raise _Refusal(400, "PropertyValueNotInList", f"The value {json.dumps(exc)} for "
                           f"the property {where}LimitException is not in the list of "
                           f"acceptable values ({', '.join(_LIMIT_EXCEPTIONS)}).")
        corr = limit.get("CorrectionInMs", ...)
        if corr is not ... and (isinstance(corr, bool) or not isinstance(corr, int)
                                or corr < 0):
            raise _Refusal(400, "PropertyValueTypeError", f"The value {json.dumps(corr)} for "
                           f"the property {where}CorrectionInMs must be an integer >= 0.")

        def apply(c: _Chassis) -> None:
            if watts is not ...:
                c.enabled = watts is not None
                if watts is not None:
                    c.set_point_w = float(watts)
            if exc is not ...:
                c.limit_exception = exc
            if corr is not ...:
                c.correction_ms = corr
        return self._commit(cid, req.headers, apply, self._power_reply)

    @staticmethod
    def _check_limit(ch: _Chassis, value, name: str) -> None:
        if not _is_watts(value):
            raise _Refusal(400, "PropertyValueTypeError", f"The value {json.dumps(value)} for "
                           f"the property {name} is of a different type than the property "
                           f"can accept: expected a finite number >= 0 (W).")
        if not ch.allowable_min_w <= value <= ch.allowable_max_w:
            raise _Refusal(400, "PropertyValueOutOfRange", f"The value {value:g} for the "
                           f"property {name} is not in the supported range of acceptable "
                           f"values ({ch.allowable_min_w:g} to {ch.allowable_max_w:g} W).")

    def _commit(self, cid: str, headers: Mapping[str, str], apply: Callable[[_Chassis], None],
                render: Callable[[str, _Chassis, float | None], _Reply]) -> _Reply:
        """Check If-Match, apply the change under the lock, tell on_limit, answer with the
        resource as it now is."""
        reading = self._reading(cid)
        with self._lock:
            ch = self._chassis[cid]
            self._check_if_match(cid, ch, headers.get("If-Match"))
            before = ch.limit_w
            apply(ch)
            ch.version += 1
            after = ch.limit_w
            reply = render(cid, ch, reading)
        if after != before:
            self._notify(cid, after)
        return reply

    def _check_if_match(self, cid: str, ch: _Chassis, if_match: str | None) -> None:
        if if_match is None:
            if self.require_if_match:
                raise _Refusal(428, "PreconditionRequired", "A precondition header (If-Match) "
                               "is required for a PATCH of this resource.")
            return
        current = self._etag(cid, ch)
        tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
        if "*" not in tags and current not in tags:
            raise _Refusal(412, "PreconditionFailed", f"The ETag {if_match} supplied did not "
                           f"match the current ETag {current} of the resource.")

    # -- sessions -----------------------------------------------------------------------------
    @staticmethod
    def _session_service(req: _Request) -> _Reply:
        return _Reply(200, {"@odata.id": f"{_ROOT}/SessionService",
                            "@odata.type": "#SessionService.v1_1_8.SessionService",
                            "Id": "SessionService", "Name": "Session Service",
                            "ServiceEnabled": True, "SessionTimeout": 1800,
                            "Sessions": {"@odata.id": _SESSIONS}})

    def _session_collection(self, req: _Request) -> _Reply:
        with self._lock:
            ids = sorted((sid for sid, _ in self._sessions.values()), key=int)
        members = [{"@odata.id": f"{_SESSIONS}/{sid}"} for sid in ids]
        return _Reply(200, {"@odata.id": _SESSIONS,
                            "@odata.type": "#SessionCollection.SessionCollection",
                            "Name": "Session Collection", "Members": members,
                            "Members@odata.count": len(members)})

    @staticmethod
    def _session_resource(sid: str, user: str) -> dict:
        return {"@odata.id": f"{_SESSIONS}/{sid}", "@odata.type": "#Session.v1_6_0.Session",
                "Id": sid, "Name": "User Session", "UserName": user}

    def _find_session(self, sid: str) -> tuple[str, str]:
        with self._lock:
            for token, (s, user) in self._sessions.items():
                if s == sid:
                    return token, user
        raise _Refusal(404, "ResourceMissingAtURI", f"The resource at the URI "
                       f"{_SESSIONS}/{sid} was not found.")

    def _session_doc(self, req: _Request, sid: str) -> _Reply:
        _, user = self._find_session(sid)
        return _Reply(200, self._session_resource(sid, user))

    def _delete_session(self, req: _Request, sid: str) -> _Reply:
        token, _ = self._find_session(sid)
        with self._lock:
            self._sessions.pop(token, None)
            self._session_chassis.pop(token, None)
        return _Reply(204)


def _unknown(doc: dict, allowed: Sequence[str], where: str,
             read_only: Sequence[str] = ()) -> None:
    """400 for properties of `doc` outside `allowed`, naming them."""
    extra = [k for k in doc if k not in allowed and not k.startswith("@odata.")]
    if not extra:
        return
    names = ", ".join(where + k for k in extra)
    if all(k in read_only for k in extra):
        raise _Refusal(400, "PropertyNotWritable", f"The property {names} is a read only "
                       f"property and cannot be assigned a value.")
    raise _Refusal(400, "PropertyUnknown", f"The property {names} is not in the list of valid "
                   f"properties for the resource (writable here: "
                   f"{', '.join(where + a for a in allowed) or 'none'}).")


class _HttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its open connections (to close them on stop), binds
    IPv6 hosts, skips the reverse DNS lookup and reports handler errors only to the log."""

    daemon_threads = True
    request_queue_size = 64        # a rack's worth of clients connecting at once (default 5)

    def __init__(self, address: tuple[str, int], sim: SimBmcServer):
        self.sim = sim
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        _log.debug("simulated BMC: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every answer has a Content-Length (none for 204)."""

    protocol_version = "HTTP/1.1"
    server_version = "rackpower-sim-bmc/1"
    server: _HttpServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        _log.debug("simulated BMC %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        body = self._body()
        if body is None:
            reply = _Reply(400, _error_doc(400, "GeneralError", "A request body needs a valid "
                                           f"Content-Length of at most {_MAX_BODY} bytes."))
            self.close_connection = True
        else:
            reply = sim._handle(method, self.path, self.headers, body)
        delay = sim._delay()
        if delay > 0:
            time.sleep(delay)
        self._send(reply)

    def _body(self) -> bytes | None:
        """The request body (b"" when none); None when it cannot be framed."""
        if self.headers.get("Transfer-Encoding"):
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit() or int(length) > _MAX_BODY:
            return None
        return self.rfile.read(int(length))

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        payload = b""
        if reply.status != 204:
            payload = json.dumps(reply.doc if reply.doc is not None else {}).encode()
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("OData-Version", "4.0")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
