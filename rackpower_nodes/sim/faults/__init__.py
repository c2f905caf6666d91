"""Faults injected into the rack simulator, with their ground truth.

:mod:`.spec` (`FaultSpec`: what, where, when, how it grows, how big), :mod:`.effects` (what
each fault does to the rack or to the board's reading, block by block), :mod:`.plan`
(`random_faults`, realistic draws from one table of ranges; `parse_fault`, the CLI syntax) and
:mod:`.frames` (`health_frame`: a fast-mode run as the health model's per-second
`HealthFrame`). Models and sources: docs/rack-simulator.md, "Faults".
"""
from rackpower_nodes.sim.faults.spec import GROWTHS, FaultSpec, FaultSpecError

__all__ = ["GROWTHS", "FaultSpec", "FaultSpecError"]
