"""Calendar phases shared by host telemetry and the forecaster's features (no rclpy)."""
from __future__ import annotations

import numpy as np

DAY_S, WEEK_S = 86400.0, 7 * 86400.0
_EPOCH_TO_MONDAY_S = 3 * DAY_S      # 1970-01-01 was a Thursday; weeks start Monday 00:00


def phases(local_t) -> np.ndarray:
    """(n, 4) sin/cos of the phase within the day and within the week (Monday 00:00 = 0) of
    local times `local_t` (s since the epoch, already shifted to the local zone)."""
    t = np.atleast_1d(np.asarray(local_t, dtype=np.float64))
    day = 2 * np.pi * np.mod(t, DAY_S) / DAY_S
    week = 2 * np.pi * np.mod(t + _EPOCH_TO_MONDAY_S, WEEK_S) / WEEK_S
    return np.column_stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)])
