"""The simulated BMC's one account, its Redfish sessions and how a request authenticates.

`_SessionAuth` is a part of `SimBmcServer` (`rackpower_nodes.sim.bmc.server`), which holds
the state it uses (the account, the sessions by token and the lock guarding them): sessions
are created by POST to `/redfish/v1/SessionService/Sessions` (201, X-Auth-Token and Location
headers), listed and read there, and ended by DELETE of their URI; a request authenticates
with X-Auth-Token or HTTP Basic credentials, else it is refused with 401.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading

from rackpower_nodes.sim.bmc.redfish import _ROOT, _SESSIONS, _Refusal, _Reply, _Request


class _SessionAuth:
    """Authentication and the SessionService of `SimBmcServer`, on the server's state."""

    _lock: threading.Lock
    _username: str
    _password: str
    _sessions: dict[str, tuple[str, str]]          # token -> (session id, user)
    _session_chassis: dict[str, set[str]]          # token -> chassis it touched
    _next_session: int

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
