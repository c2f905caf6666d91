"""A server's power limit through its BMC (Redfish), as a second actuator beside the PDUs.

`RedfishPowerCap` is a `PduClient` with one outlet (outlet 1): the chassis. Metering is the
chassis' power reading, the allocation is its power limit, so the PDU link drives it like a
one-outlet PDU.

The parts: `power_cap` (`RedfishPowerCap`: connecting, the allowable range, reads and writes
of the limit; its docstring describes the schemas, errors and timeouts), `redfish` (the HTTP
session: log-in, requests, `BmcError`, bounded answers) and `schema` (where each DMTF schema
keeps the limit). Beside them, read only: `psu_meter` (`RedfishPsuMeter`: the chassis' PSU
meters, Power.PowerSupplies[]) and `psu_readings` (their parsing). This package re-exports
the power cap's public names.
"""
from rackpower_nodes.drivers.bmc.power_cap import RedfishPowerCap, open_power_cap
from rackpower_nodes.drivers.bmc.redfish import AUTHS, MAX_BODY_BYTES, BmcError, BodyTooLarge
from rackpower_nodes.drivers.bmc.schema import APIS

__all__ = ["APIS", "AUTHS", "MAX_BODY_BYTES", "BmcError", "BodyTooLarge", "RedfishPowerCap",
           "open_power_cap"]
