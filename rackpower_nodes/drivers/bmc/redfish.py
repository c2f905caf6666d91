"""The Redfish HTTP session of a BMC client: log-in, requests, errors and bounded answers.

`_RedfishSession` is mixed into `RedfishPowerCap` and `RedfishPsuMeter`: it checks the chassis
URL and login, logs in through the DMTF `redfish` library, makes one request at a time, and
turns every failure into a `BmcError` naming the URL, the request, the HTTP status and the
Redfish message (disconnecting the client). Answers over MAX_BODY_BYTES are refused without
being read past the cap and one chunk.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from rackpower_nodes.core.bmc_login import split_chassis_url
from rackpower_nodes.drivers.pdu import PduError

_ROOT_PATH = "/redfish/v1/"
AUTHS = ("session", "basic")       # Redfish login: a session (X-Auth-Token) or HTTP Basic
MAX_BODY_BYTES = 2**20             # a larger answer is refused (Redfish resources are a few kB)


class BmcError(PduError):
    """The BMC did not answer, refused the request or answered something unexpected. The
    client is disconnected; `connect()` again to retry."""


class _RedfishSession:
    """Log-in and requests of a BMC client (`RedfishPowerCap`, `RedfishPsuMeter`): its
    `_client`, `url`, credentials and timeout, set by `_init_session`."""

    def _init_session(self, url: str, username: str, password: str, auth: str,
                      timeout_s: float, cafile: str | None) -> None:
        """The chassis URL, login and timeout, checked (ValueError naming the URL and the
        value); not connected yet."""
        self.url = url
        self._base, self.chassis_path = split_chassis_url(url)
        if auth not in AUTHS:
            raise ValueError(f"BMC {url}: auth = {auth!r}, expected {' or '.join(AUTHS)}")
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s)
                and timeout_s > 0):
            raise ValueError(f"BMC {url}: timeout_s = {timeout_s!r}, expected > 0 s")
        self.username, self._password, self.auth = username, password, auth
        self.timeout_s, self.cafile = float(timeout_s), cafile
        self._client = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _drop_client(self) -> None:
        """Log out (errors ignored) and drop the connection; idempotent."""
        client, self._client = self._client, None
        if client is not None:
            _release(client, logout=True)

    def _log_in(self):
        from redfish.rest.v1 import InvalidCredentialsError, redfish_client

        try:
            client = redfish_client(base_url=self._base, username=self.username,
                                    password=self._password, timeout=self.timeout_s,
                                    max_retry=0, check_connectivity=False, cafile=self.cafile)
            _cap_bodies(client._session, MAX_BODY_BYTES)   # the library's requests.Session
            _proxies_once(client._session, self._base)
            client.get_root_object()
        except Exception as exc:  # noqa: BLE001 - the library and requests raise many kinds;
            # each becomes BmcError naming it, chained
            raise BmcError(f"{self._where('GET', _ROOT_PATH)}: "
                           f"{_describe(exc, self.timeout_s)}") from exc
        method = "POST" if self.auth == "session" else "GET"
        where = self._where(method, client.login_url)
        try:
            client.login(auth=self.auth)
        except InvalidCredentialsError as exc:
            _release(client, logout=False)
            raise BmcError(f"{where}: the BMC refused the credentials of user "
                           f"{self.username!r} (HTTP 401, {self.auth} authentication)") from exc
        except Exception as exc:  # noqa: BLE001 - as above
            _release(client, logout=False)
            raise BmcError(f"{where}: cannot log in: {_describe(exc, self.timeout_s)}") from exc
        if self.auth == "session" and not client.get_session_key():
            _release(client, logout=False)
            raise BmcError(f"{where}: the BMC created no session (no X-Auth-Token header in "
                           f"its answer); try auth='basic'")
        return client

    def _where(self, method: str, path: str) -> str:
        return f"BMC {self.url}: {method} {path}"

    def _fail(self, method: str, path: str, cause: str, *, answered: bool) -> BmcError:
        """Disconnect (logging out when the BMC still takes requests); the BmcError to
        raise."""
        client, self._client = self._client, None
        if client is not None:
            _release(client, logout=answered)
        return BmcError(f"{self._where(method, path)}: {cause}")

    def _request(self, method: str, path: str, body: dict | None = None,
                 headers: dict | None = None, allow: Sequence[int] = ()):
        """One request; a response with a 2xx status (or one in `allow`). Any other outcome
        becomes BmcError and disconnects."""
        client = self._client
        if client is None:
            raise BmcError(f"{self._where(method, path)}: not connected, call connect() first")
        try:
            if method == "GET":
                resp = client.get(path, headers=headers)
            else:
                resp = client.patch(path, body=body, headers=headers)
        except Exception as exc:  # noqa: BLE001 - as in _log_in
            raise self._fail(method, path, _describe(exc, self.timeout_s),
                             answered=False) from exc
        if 200 <= resp.status < 300 or resp.status in allow:
            return resp
        cause = _http_cause(resp)
        if resp.status == 401:
            cause += " (session expired or the BMC restarted: connect() again)"
        raise self._fail(method, path, cause, answered=resp.status != 401)

    def _doc(self, resp, method: str, path: str) -> dict:
        from redfish.rest.v1 import JsonDecodingError

        try:
            doc = resp.dict
        except JsonDecodingError:
            doc = None
        if not isinstance(doc, dict):
            raise self._fail(method, path, f"HTTP {resp.status} with a body that is not a JSON "
                       f"object: {_snippet(resp.text)!r}", answered=True)
        return doc

    def _get(self, path: str) -> dict:
        return self._doc(self._request("GET", path), "GET", path)


def _release(client, *, logout: bool) -> None:
    """Log out (when asked; errors ignored), then close the client's connections."""
    if logout:
        try:
            client.logout()
            return
        except Exception:  # noqa: BLE001 - the BMC may be gone; nothing to do about it
            pass
    client.set_session_key(None)      # logout() without a session only closes connections
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - as above
        pass


class BodyTooLarge(Exception):
    """An answer over MAX_BODY_BYTES; it was not read past the cap and one chunk."""


def _cap_bodies(session, limit: int) -> None:
    """Make `session` (requests) refuse answers over `limit` bytes, decoded: a response hook
    runs before requests reads the body, so the hook reads it in 64 kB chunks and stops."""
    def read_capped(resp, *args, **kwargs):
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            resp.close()
            raise BodyTooLarge(f"answer of {length} bytes (Content-Length), more than the "
                               f"{limit}-byte cap")
        body = bytearray()
        for chunk in resp.iter_content(65536):
            body += chunk
            if len(body) > limit:
                resp.close()
                raise BodyTooLarge(f"answer larger than the {limit}-byte cap (stopped after "
                                   f"{len(body)} bytes)")
        resp._content = bytes(body)    # what requests' .content returns from now on
        return resp

    session.hooks["response"].append(read_capped)


def _proxies_once(session, base_url: str) -> None:
    """Take the environment's proxy settings for `base_url` (HTTP(S)_PROXY, NO_PROXY) into
    `session` once, at log-in, and stop requests from reading the environment (and looking
    for ~/.netrc) again at every request: CPU at every read-back and write. The credentials
    are the ones configured (power_caps.*); a ~/.netrc entry for the BMC no longer replaces
    them."""
    from requests.utils import get_environ_proxies

    session.proxies.update(get_environ_proxies(base_url))
    session.trust_env = False


def _snippet(text: str, n: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."


def _http_cause(resp) -> str:
    """"HTTP <status>: <Redfish messages>" of an error answer."""
    try:
        doc = resp.dict
    except Exception:  # noqa: BLE001 - not JSON: show the text
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    messages: list[str] = []
    if isinstance(error, dict):
        for item in error.get("@Message.ExtendedInfo") or []:
            if isinstance(item, dict) and item.get("Message"):
                mid = item.get("MessageId")
                messages.append(f"{item['Message']}" + (f" ({mid})" if mid else ""))
        if not messages and error.get("message"):
            messages.append(str(error["message"]))
    elif doc is None and resp.text:
        messages.append(_snippet(resp.text))
    return f"HTTP {resp.status}" + (f": {'; '.join(messages)}" if messages else "")


def _innermost(exc: BaseException) -> BaseException:
    """The root cause of a requests/urllib3 error (they nest causes in args and `reason`)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or getattr(exc, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in exc.args if isinstance(a, BaseException)), None)
        if nxt is None:
            break
        exc = nxt
    return exc


def _describe(exc: BaseException, timeout_s: float) -> str:
    """A short cause for an exception of the redfish library or requests beneath it."""
    import requests
    from redfish.rest.v1 import RetriesExhaustedError, ServerDownOrUnreachableError

    resp = getattr(exc, "response", None)
    if isinstance(exc, ServerDownOrUnreachableError) and resp is not None:
        return _http_cause(resp)
    if isinstance(exc, RetriesExhaustedError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"timeout: no connection within {timeout_s:g} s"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"timeout: no answer within {timeout_s:g} s"
    root = _innermost(exc)
    text = root.strerror if isinstance(root, OSError) and root.strerror else str(root)
    return f"{type(root).__name__}: {_snippet(text) or 'no detail'}"
