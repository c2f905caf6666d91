"""The simulated BMC's chassis resources: the Chassis collection, each chassis, its limit.

`_ChassisResources` is a part of `SimBmcServer` (`rackpower_nodes.sim.bmc.server`), which
holds the state it uses (the `_Chassis` by id, the metered power callback, the lock): it answers
GETs of `/redfish/v1/Chassis`, `.../Chassis/{id}`, its EnvironmentMetrics and Power resources,
and PATCHes of the last two, checking If-Match against the limit's ETag, applying the change
under the lock and telling `on_limit` (through the server's `_notify`) when the limit in force
changed. Documents and body checks come from `rackpower_nodes.sim.bmc.redfish`.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping

from rackpower_nodes.sim.bmc.redfish import (
    _ROOT, _Chassis, _etag, _json, _metrics_change, _metrics_reply, _power_change, _power_reply,
    _Refusal, _Reply, _Request)


class _ChassisResources:
    """The chassis resources of `SimBmcServer`, on the server's state."""

    _lock: threading.Lock
    _chassis: dict[str, _Chassis]
    _power_w: Callable[[str], float] | None
    require_if_match: bool
    _notify: Callable[[str, float | None], None]   # tells on_limit of a new limit in force

    # -- chassis resources --------------------------------------------------------------------
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

    def _get_metrics(self, req: _Request, cid: str) -> _Reply:
        self._resource(cid, "EnvironmentMetrics")
        reading = self._reading(cid)
        with self._lock:
            return _metrics_reply(cid, self._chassis[cid], reading)

    def _get_power(self, req: _Request, cid: str) -> _Reply:
        self._resource(cid, "Power")
        reading = self._reading(cid)
        with self._lock:
            return _power_reply(cid, self._chassis[cid], reading)

    # -- PATCH --------------------------------------------------------------------------------
    def _patch_metrics(self, req: _Request, cid: str) -> _Reply:
        ch = self._resource(cid, "EnvironmentMetrics")
        doc = _json(req.body)
        return self._commit(cid, req.headers, _metrics_change(ch, doc), _metrics_reply)

    def _patch_power(self, req: _Request, cid: str) -> _Reply:
        ch = self._resource(cid, "Power")
        doc = _json(req.body)
        return self._commit(cid, req.headers, _power_change(ch, doc), _power_reply)

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
        current = _etag(cid, ch)
        tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
        if "*" not in tags and current not in tags:
            raise _Refusal(412, "PreconditionFailed", f"The ETag {if_match} supplied did not "
                           f"match the current ETag {current} of the resource.")
