"""The health model: find a failing component (or a failing sensor) from its power draw.

:mod:`.types` holds the shared shapes (:class:`HealthFrame`, :class:`HealthVerdict`,
:class:`FlaggedInterval`) and the fault classes.
"""
from rackpower_nodes.core.health.types import (
    COMPONENT_FAULTS,
    FAULT_CLASSES,
    FRAME_FIELDS,
    HEALTH_STATES,
    SENSOR_FAULTS,
    FlaggedInterval,
    HealthFrame,
    HealthFrameError,
    HealthVerdict,
)

__all__ = [
    "COMPONENT_FAULTS", "FAULT_CLASSES", "FRAME_FIELDS", "HEALTH_STATES", "SENSOR_FAULTS",
    "FlaggedInterval", "HealthFrame", "HealthFrameError", "HealthVerdict",
]
