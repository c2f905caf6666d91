"""The simulator's PDU: a pure model of outlets and the rack breaker, and a Modbus TCP server.

`PduModel` (:mod:`.model`) serves each outlet min(demand, allocation, server cap) (0 W for an
outlet switched off; the server cap is the power limit a server's BMC enforces, `sim.bmc`),
counts what it withheld, and models the breaker feeding the outlets with a thermal and a
magnetic trip curve (described there); after a trip every outlet is served 0 W.
`SimPduServer` exposes one PDU's outlets of a model over Modbus TCP on loopback with the
`rackpower_sim` register map (config/pdu/rackpower_sim.yaml, docs/pdu.md). Like a real PDU it
takes writes from any Modbus client (there is no authentication in Modbus), and `reboot()`
plays a power cycle: connections dropped, allocations back to the power-on defaults (the
outlet ratings unless told otherwise, which may sum above the breaker) and the boot counter
one higher.

Parts: :mod:`.model` (`PduModel`) and :mod:`.server` (`SimPduServer`, on pymodbus).
"""
from rackpower_nodes.sim.pdu.model import PduModel
from rackpower_nodes.sim.pdu.server import MAP_VERSION, MODEL_CODE, SimPduServer

__all__ = ["PduModel", "SimPduServer", "MODEL_CODE", "MAP_VERSION"]
