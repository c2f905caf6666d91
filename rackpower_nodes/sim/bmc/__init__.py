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

A chassis given PSUs (`psus`) also serves their own meters in the legacy Power resource,
whatever its api: `PowerSupplies[]` (Power.v1_7_1: MemberId, Name, PowerInputWatts,
PowerOutputWatts, LastPowerOutputWatts, PowerCapacityWatts, Status), with the readings of
`set_psu_readings` (null before the first); where the limit is not in Power, Power has no
PowerLimit and takes no PATCH.

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

Parts: `server` (`SimBmcServer`: configuration, lifecycle, state, fault injection, routing),
`resources` (the chassis resources and their PATCH), `sessions` (the account and the
SessionService), `redfish` (documents and body checks, pure) and `http_server` (the transport).
"""
from rackpower_nodes.sim.bmc.redfish import APIS
from rackpower_nodes.sim.bmc.server import SimBmcServer

__all__ = ["SimBmcServer", "APIS"]
