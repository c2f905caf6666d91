"""Small component series for the forecast data tests: a start on the 0.1 s grid, a small
window spec and `component_series`, a ComponentSeries built from a plain list of watts."""
from __future__ import annotations

import numpy as np

from rackpower_nodes.core.forecast.features import WindowSpec
from rackpower_nodes.core.forecast.series import ComponentSeries

T0 = 1_700_000_000.0                  # on the 0.1 s grid
SMALL = WindowSpec(step_s=0.1, history_steps=10, horizon_steps=5, coarse=(3, 10))

__all__ = ["SMALL", "T0", "component_series"]


def component_series(power, step_s=0.1, t0=T0, telemetry=None, name="srv01", idle_w=50.0,
                     max_w=200.0, schedule=None) -> ComponentSeries:
    """`power` (W per step of `step_s` s from `t0`) as one component's series; telemetry all
    unknown (NaN) unless given, shape (len(power), 6)."""
    power = np.asarray(power, dtype=np.float64)
    tel = np.full((len(power), 6), np.nan) if telemetry is None else telemetry
    return ComponentSeries(name, t0, step_s, power, tel, idle_w, max_w, schedule)
