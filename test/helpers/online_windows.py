"""`FromScratch`: `OnlineWindows` as it built windows before its row cache, every row of the
held history from scratch and then the newest ``history_steps`` of them: the reference the
cached windows must equal byte for byte (test/core/test_online_windows_cache.py) and the
"before" of benchmarks/bench_online_windows.py."""
from __future__ import annotations

import numpy as np

from rackpower_nodes.core.forecast.event_windows import snapshot_rows
from rackpower_nodes.core.forecast.features import step_features
from rackpower_nodes.core.forecast.online import OnlineWindows
from rackpower_nodes.core.forecast.series import hold_telemetry, step_times

__all__ = ["FromScratch"]


class FromScratch(OnlineWindows):
    """The windows as built before the row cache."""

    def _window_rows(self, ready):
        return [(i, self._from_scratch(i)) for i in ready.tolist()]

    def _from_scratch(self, i):
        name = self.components[i]
        track = self._tracks[name]
        first = track.cur - len(track.steps)
        steps = first + np.arange(len(track.steps))
        log = self._tele[name]
        tel = hold_telemetry(steps, [m[0] for m in log], [m[1] for m in log], self.spec.step_s,
                             self.telemetry_max_age_s)
        events = None
        if self._snapshots:
            events = snapshot_rows(self._snapshots, name,
                                   step_times(first, len(steps), self.spec.step_s),
                                   self.events_stale_s)
        feats = step_features(np.array(track.steps, np.float32), tel, first, self.spec,
                              self.idle_w[i], self.max_w[i], name, self.schedule, events)
        return feats[-self.spec.history_steps:]
