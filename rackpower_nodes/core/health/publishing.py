"""When a component's health verdict goes out again: `ChangeGate`.

The health monitor judges every component once a second, but a verdict that did not change
says nothing new: `component_health` is latched (the newest message per component), so a
subscriber that joins late still gets every component's state. Publishing sixteen unchanged
messages a second to every subscriber (the recorder, the retrain scheduler, the rack view,
the metrics exporter) costs each of them a callback per message. So a component's verdict is
published at once when its state or cause changes (ok -> watch -> fault, or another cause),
and otherwise again every ``refresh_s`` with its newest score and evidence.

Pure module (no rclpy).
"""
from __future__ import annotations

import math
from collections.abc import Hashable

__all__ = ["ChangeGate"]


class ChangeGate:
    """Per name, whether a value is due: its key changed since the last one let through, or
    ``refresh_s`` (s) passed since then (0: every value is due)."""

    def __init__(self, refresh_s: float) -> None:
        if not (math.isfinite(refresh_s) and refresh_s >= 0):
            raise ValueError(f"refresh_s = {refresh_s!r}: expected a finite period >= 0 s")
        self.refresh_s = float(refresh_s)
        self._sent: dict[str, tuple[Hashable, float]] = {}

    def due(self, name: str, key: Hashable, now_s: float) -> bool:
        """True (and remembered as sent at ``now_s``) when ``name``'s value with ``key`` is to
        go out now; a clock that went back counts as a refresh due."""
        last = self._sent.get(name)
        if (last is not None and last[0] == key
                and 0.0 <= now_s - last[1] < self.refresh_s):
            return False
        self._sent[name] = (key, now_s)
        return True
