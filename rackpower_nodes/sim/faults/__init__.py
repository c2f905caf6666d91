"""Faults injected into the rack simulator, with their ground truth (:mod:`.spec`)."""
from rackpower_nodes.sim.faults.spec import GROWTHS, FaultSpec, FaultSpecError

__all__ = ["GROWTHS", "FaultSpec", "FaultSpecError"]
