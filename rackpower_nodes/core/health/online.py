"""Learning a component baseline online: `OnlineLearner`.

The `health_monitor` node starts without a learned model when it has none; with
``health.learn_s`` > 0 it hands every judged second to an :class:`OnlineLearner`, which keeps
the *clean* ones (a component's board figures are blanked, NaN, in the seconds where its own
verdict was watch or fault, so a failing part is never learned as normal) until it holds
``learn_s`` seconds of them. It then fits a :class:`~.baseline.HealthModel` in a child process
of its own (started with ``spawn``: no ROS in it, niced, one LightGBM thread), so the live
loop never waits for it, saves the model as a file and hands it back through :meth:`poll`.
The child is started from a short-lived thread: joining the held rows and sending them to a
fresh interpreter takes seconds, which the caller's loop (one thread for every ROS callback)
must not wait for.

Pure module (no rclpy); the child imports only the core.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rackpower_nodes.core.health.types import FRAME_FIELDS, HealthFrame, HealthVerdict

__all__ = ["OnlineLearner"]

_BOARD = ("board_mean_w", "board_min_w", "board_max_w", "board_std_w")
# frames added (one second each from the node) are packed into one float32 chunk per this
# many: a 1-row frame costs ~40x its data; packed, a day of 16 components is ~55 MB
CHUNK_ROWS = 600


def _fit_in_child(frame: HealthFrame, config: dict[str, Any], path: str) -> None:
    """In the child: fit on ``frame`` with the settings ``config`` and save to ``path``; a
    failure is written to ``<path>.error`` (exit code 1)."""
    os.nice(10)
    from rackpower_nodes.core.health.baseline import HealthModel
    from rackpower_nodes.core.health.config import HealthConfig

    try:
        HealthModel.fit(frame, HealthConfig.from_mapping(config)).save(path)
    except (ValueError, OSError) as exc:
        Path(f"{path}.error").write_text(str(exc))
        raise SystemExit(1) from None


class OnlineLearner:
    """Collects clean seconds and fits a HealthModel once ``learn_s`` of them are held.

    ``config``: the HealthConfig settings as a plain mapping (``HealthConfig.from_mapping``'s
    input); ``folder``: where the learned model is written (``health-model-<UTC>.json``).
    """

    def __init__(self, learn_s: float, config: dict[str, Any], folder: str | os.PathLike):
        if not learn_s > 0:
            raise ValueError(f"learn_s = {learn_s!r}: expected > 0 s")
        self.learn_s, self.config, self.folder = float(learn_s), dict(config), Path(folder)
        self._frames: list[HealthFrame] = []        # packed chunks, then the newest rows
        self._packed = 0                            # how many of _frames are packed
        self._rows = 0
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._starter: threading.Thread | None = None   # starts the child, then ends
        self._start_error = ""
        self._target: Path | None = None
        self.done = False
        self.path: Path | None = None
        self.state = f"collecting clean seconds (0 of {self.learn_s:.0f})"

    @property
    def collected_s(self) -> float:
        """Seconds held so far (one row per second)."""
        return float(self._rows)

    def add(self, frame: HealthFrame, verdicts: list[HealthVerdict]) -> None:
        """The rows just judged, with the verdicts they produced (one per component, any
        order); components not ok have their board figures blanked in these rows."""
        if self._starter is not None or self.done or not len(frame):
            return
        bad = [frame.column(v.component) for v in verdicts if v.state != "ok"]
        if bad:
            board = {f: np.array(getattr(frame, f), dtype=np.float32) for f in _BOARD}
            for arr in board.values():
                arr[:, bad] = np.nan
            frame = HealthFrame(frame.t_unix, frame.names, frame.kinds, **{
                f: board.get(f, getattr(frame, f)) for f in FRAME_FIELDS})
        self._frames.append(frame)
        self._rows += len(frame)
        if len(self._frames) - self._packed >= CHUNK_ROWS:
            self._pack()
        self.state = f"collecting clean seconds ({self._rows} of {self.learn_s:.0f})"
        if self._rows >= self.learn_s:
            self._start()

    def _pack(self) -> None:
        """The unpacked rows as one float32 chunk (a 1-row frame costs ~40x its data)."""
        tail = HealthFrame.concat(self._frames[self._packed:])
        packed = HealthFrame(tail.t_unix, tail.names, tail.kinds, **{
            f: getattr(tail, f).astype(np.float32) for f in FRAME_FIELDS})
        self._frames[self._packed:] = [packed]
        self._packed += 1

    def _start(self) -> None:
        frames, self._frames = self._frames, []
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._target = self.folder / f"health-model-{stamp}.json"
        self._starter = threading.Thread(target=self._spawn, args=(frames, self._target),
                                         name="health-learner-start", daemon=True)
        self._starter.start()
        self.state = f"learning from {self._rows} s in a child process"

    def _spawn(self, frames: list[HealthFrame], target: Path) -> None:
        """On the starter thread: the child that fits on ``frames`` and saves to ``target``."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=_fit_in_child, args=(HealthFrame.concat(frames),
                                                           self.config, str(target)),
                               name="health-learner", daemon=True)
            proc.start()
        except OSError as exc:
            self._start_error = f"cannot start the child: {exc}"
            return
        self._proc = proc

    def poll(self):
        """The learned HealthModel once the child is done (once), else None. A failed fit
        is said in :attr:`state` and not retried."""
        starter = self._starter
        if starter is None or starter.is_alive() or self.done:
            return None
        proc = self._proc
        if proc is not None and proc.is_alive():
            return None
        if proc is not None:
            proc.join()
        self._proc, self.done = None, True
        error = Path(f"{self._target}.error")
        try:
            if proc is None:
                raise RuntimeError(self._start_error or "the child did not start")
            if proc.exitcode != 0:
                why = error.read_text() if error.is_file() else f"exit code {proc.exitcode}"
                raise RuntimeError(why)
            from rackpower_nodes.core.health.baseline import HealthModel

            model = HealthModel.load(self._target)
        except (ValueError, OSError, RuntimeError) as exc:
            self.state = f"learning failed: {exc}"
            return None
        self.path = self._target
        self.state = f"learned from {self.learn_s:.0f} s, saved to {self.path}"
        return model

    def close(self) -> None:
        """End a fit in progress (waiting for a start in progress first)."""
        if self._starter is not None:
            self._starter.join(5.0)
        proc, self._proc = self._proc, None
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5.0)
