"""Learning a component baseline online: `OnlineLearner`.

The `health_monitor` node starts without a learned model when it has none; with
``health.learn_s`` > 0 it hands every judged second to an :class:`OnlineLearner`, which keeps
the *clean* ones (a component's board figures are blanked, NaN, in the seconds where its own
verdict was watch or fault, so a failing part is never learned as normal) until it holds
``learn_s`` seconds of them. It then fits a :class:`~.baseline.HealthModel` in a child process
of its own (started with ``spawn``: no ROS in it, niced, one LightGBM thread), so the live
loop never waits for it, saves the model as a file and hands it back through :meth:`poll`.
The child is started from a short-lived thread: sending the work to a fresh interpreter
takes seconds, which the caller's loop (one thread for every ROS callback) must not wait for.

The held seconds are kept on disk, not in the node's memory: every :data:`CHUNK_ROWS` added
frames are packed into one float32 chunk and written (``numpy.savez``, no pickles) to a
private working folder under the learn folder, ``.learning-<pid>-<UTC>-<random>/``; only the
newest frames, not yet packed, stay in memory. A day of 16 components takes ~56 MB (54 MiB)
of disk there: 86400 rows x (8 + 10 fields x 16 components x 4) bytes, ~2.3 MB an hour. When
enough is held, the rest is written as a last chunk (as added, not rounded) and the child is
given the chunks' paths: it reads and joins them itself, so the whole day is never held in
the node's process. The working folder is removed once the fit is over (either way) and by
:meth:`OnlineLearner.close`. A chunk that cannot be written (disk full, folder not writable)
ends the learning, said in :attr:`OnlineLearner.state`; the caller's loop carries on.

Pure module (no rclpy); the child imports only the core.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rackpower_nodes.core.health.types import FRAME_FIELDS, HealthFrame, HealthVerdict

__all__ = ["OnlineLearner"]

_BOARD = ("board_mean_w", "board_min_w", "board_max_w", "board_std_w")
# frames added (one second each from the node) are packed into one float32 chunk per this
# many and written to disk: a 1-row frame costs ~40x its data in memory; a packed chunk of
# 16 components is ~390 KB on disk, a day of them ~56 MB
CHUNK_ROWS = 600


def _save_chunk(frame: HealthFrame, path: Path) -> None:
    """``frame`` as one ``.npz`` file at ``path`` (arrays only, dtypes kept)."""
    np.savez(path, t_unix=frame.t_unix, names=np.array(frame.names, dtype=str),
             kinds=np.array(frame.kinds, dtype=str),
             **{f: getattr(frame, f) for f in FRAME_FIELDS})


def _load_chunks(paths: list[str]) -> HealthFrame:
    """The chunks at ``paths`` one after the other as one frame: the arrays
    :meth:`HealthFrame.concat` would give for the chunks in memory. Joined one field at a
    time, so no more than one field's chunks are held besides the frame."""
    if not paths:
        raise ValueError("no chunks to learn from")
    names = kinds = None
    times = []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            these = tuple(str(n) for n in z["names"])
            if names is None:
                names, kinds = these, tuple(str(k) for k in z["kinds"])
            elif these != names:
                raise ValueError(f"{p}: names {these} differ from {names}")
            times.append(z["t_unix"])
    fields = []
    for f in FRAME_FIELDS:
        parts = []
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                parts.append(z[f])
        fields.append(np.concatenate(parts))
        del parts
    return HealthFrame(np.concatenate(times), names, kinds, *fields)


def _fit_in_child(chunks: list[str], config: dict[str, Any], path: str) -> None:
    """In the child: fit on the frame the files ``chunks`` hold, with the settings
    ``config``, and save to ``path``; a failure is written to ``<path>.error`` (exit code
    1)."""
    os.nice(10)
    from rackpower_nodes.core.health.baseline import HealthModel
    from rackpower_nodes.core.health.config import HealthConfig

    try:
        HealthModel.fit(_load_chunks(chunks), HealthConfig.from_mapping(config)).save(path)
    except (ValueError, OSError) as exc:
        Path(f"{path}.error").write_text(str(exc))
        raise SystemExit(1) from None


class OnlineLearner:
    """Collects clean seconds and fits a HealthModel once ``learn_s`` of them are held.

    ``config``: the HealthConfig settings as a plain mapping (``HealthConfig.from_mapping``'s
    input); ``folder``: where the learned model is written (``health-model-<UTC>.json``) and
    where the held seconds are kept meanwhile (a ``.learning-*`` folder, removed after).
    """

    def __init__(self, learn_s: float, config: dict[str, Any], folder: str | os.PathLike):
        if not learn_s > 0:
            raise ValueError(f"learn_s = {learn_s!r}: expected > 0 s")
        self.learn_s, self.config, self.folder = float(learn_s), dict(config), Path(folder)
        self._frames: list[HealthFrame] = []        # the newest rows, not yet packed
        self._chunks: list[Path] = []               # the packed ones, on disk in _work
        self._work: Path | None = None              # the working folder, once made
        self._closed = False
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
        if self._starter is not None or self.done or self._closed or not len(frame):
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
        if len(self._frames) >= CHUNK_ROWS and not self._pack():
            return
        self.state = f"collecting clean seconds ({self._rows} of {self.learn_s:.0f})"
        if self._rows >= self.learn_s:
            self._start()

    def _pack(self) -> bool:
        """The unpacked rows as one float32 chunk on disk (a 1-row frame costs ~40x its
        data in memory); False when it cannot be written (then learning is over)."""
        tail = HealthFrame.concat(self._frames)
        packed = HealthFrame(tail.t_unix, tail.names, tail.kinds, **{
            f: getattr(tail, f).astype(np.float32) for f in FRAME_FIELDS})
        del tail
        if not self._write(packed):
            return False
        self._frames = []
        return True

    def _write(self, frame: HealthFrame) -> bool:
        """``frame`` as the next chunk file in the working folder (made on first use);
        a failure ends the learning, said in :attr:`state`, and returns False."""
        target = self.folder
        try:
            if self._work is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                self._work = Path(tempfile.mkdtemp(
                    prefix=f".learning-{os.getpid()}-{stamp}-", dir=self.folder))
            target = self._work / f"chunk-{len(self._chunks):05d}.npz"
            _save_chunk(frame, target)
        except OSError as exc:
            self._frames, self._chunks, self.done = [], [], True
            self._remove_work()
            self.state = f"learning failed: cannot write {target}: {exc}"
            return False
        self._chunks.append(target)
        return True

    def _remove_work(self) -> None:
        work, self._work = self._work, None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def _start(self) -> None:
        if self._frames:                            # the rest, as the last chunk (as added)
            if not self._write(HealthFrame.concat(self._frames)):
                return
            self._frames = []
        chunks = [str(p) for p in self._chunks]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._target = self.folder / f"health-model-{stamp}.json"
        self._starter = threading.Thread(target=self._spawn, args=(chunks, self._target),
                                         name="health-learner-start", daemon=True)
        self._starter.start()
        self.state = f"learning from {self._rows} s in a child process"

    def _spawn(self, chunks: list[str], target: Path) -> None:
        """On the starter thread: the child that fits on the files ``chunks`` and saves to
        ``target``."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=_fit_in_child, args=(chunks, self.config, str(target)),
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
        self._remove_work()
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
        """End a fit in progress (waiting for a start in progress first) and remove the
        held seconds from disk; nothing more is kept after."""
        self._closed = True
        if self._starter is not None:
            self._starter.join(5.0)
        proc, self._proc = self._proc, None
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        self._frames, self._chunks = [], []
        self._remove_work()
