"""The health model: find a failing component (or a failing sensor) from its power draw.

:mod:`.types` holds the shared shapes (:class:`HealthFrame`, :class:`HealthVerdict`,
:class:`FlaggedInterval`) and the fault classes. The learned part: :mod:`.minutes` (minute
summaries), :mod:`.baseline` (:class:`HealthModel`: expected draw and utilisation, detector
calibration), :mod:`.cusum` (change detection), :mod:`.signatures` (naming the cause) and
:mod:`.monitor` (:class:`HealthMonitor`, settings in :mod:`.config`: :class:`HealthConfig`).
The learned modules load on first use of their names (lightgbm is not needed for the shapes).
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

_LAZY = {"HealthConfig": "config", "HealthConfigError": "config", "HealthModel": "baseline",
         "HealthModelError": "baseline", "HealthMonitor": "monitor"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HealthConfig", "HealthConfigError", "HealthModel", "HealthModelError", "HealthMonitor",
    "COMPONENT_FAULTS", "FAULT_CLASSES", "FRAME_FIELDS", "HEALTH_STATES", "SENSOR_FAULTS",
    "FlaggedInterval", "HealthFrame", "HealthFrameError", "HealthVerdict",
]
