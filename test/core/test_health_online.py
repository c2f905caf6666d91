"""OnlineLearner: clean seconds collected, faulty ones left out, a model fitted in a child."""
from __future__ import annotations

import errno
import time

import numpy as np
import pytest

from rackpower_nodes.core.health import HealthFrame, HealthVerdict
from rackpower_nodes.core.health import online
from rackpower_nodes.core.health.baseline import HealthModel
from rackpower_nodes.core.health.config import HealthConfig
from rackpower_nodes.core.health.online import OnlineLearner
from rackpower_nodes.core.health.types import FRAME_FIELDS
from rackpower_nodes.sim.faults.frames import health_frame
from rackpower_nodes.sim.rack_sim import generate


@pytest.fixture(scope="module")
def frame():
    return health_frame(generate(0.3, seed=100))          # 18 minutes, training seed


def _ok(frame, **bad) -> list[HealthVerdict]:
    return [HealthVerdict(n, bad.get(n, "ok"), 0.0 if n not in bad else 1.2,
                          "fan_wear" if n in bad else "") for n in frame.names]


def _wait(learner: OnlineLearner, timeout_s: float = 120.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        model = learner.poll()
        if learner.done:
            return model
        time.sleep(0.2)
    raise AssertionError(f"no model after {timeout_s} s: {learner.state}")


def _held(learner: OnlineLearner) -> HealthFrame:
    """Every row the learner holds, its chunks on disk then its rows in memory."""
    parts = [online._load_chunks([str(p)]) for p in learner._chunks]
    return HealthFrame.concat(parts + learner._frames)


def _work_dirs(folder) -> list:
    return sorted(folder.glob(".learning-*"))


def _blanked(frame: HealthFrame, name: str) -> HealthFrame:
    """``frame`` with the board figures of ``name`` blanked, as for a component not ok."""
    c = frame.column(name)
    board = {f: np.array(getattr(frame, f), dtype=np.float32)
             for f in ("board_mean_w", "board_min_w", "board_max_w", "board_std_w")}
    for arr in board.values():
        arr[:, c] = np.nan
    return HealthFrame(frame.t_unix, frame.names, frame.kinds,
                       **{f: board.get(f, getattr(frame, f)) for f in FRAME_FIELDS})


def _as_held_in_memory(frames: list[HealthFrame], chunk_rows: int) -> HealthFrame:
    """The frame the learner handed its child when it kept everything in memory: every
    ``chunk_rows`` frames packed as float32, the rest as added, all joined."""
    held, tail = [], []
    for f in frames:
        tail.append(f)
        if len(tail) >= chunk_rows:
            c = HealthFrame.concat(tail)
            held.append(HealthFrame(c.t_unix, c.names, c.kinds, **{
                k: getattr(c, k).astype(np.float32) for k in FRAME_FIELDS}))
            tail = []
    return HealthFrame.concat(held + tail)


def test_seconds_of_a_component_not_ok_are_left_out(frame, tmp_path):
    learner = OnlineLearner(1e9, {}, tmp_path)
    learner.add(frame.rows(0, 60), _ok(frame))
    learner.add(frame.rows(60, 120), _ok(frame, srv02="fault"))
    assert learner.collected_s == 120
    held = HealthFrame.concat(learner._frames).rows(60, 120)
    c = frame.column("srv02")
    assert np.isnan(held.board_mean_w[:, c]).all() and np.isnan(held.board_max_w[:, c]).all()
    assert np.isfinite(held.util[:, c]).any()                  # telemetry kept
    others = [i for i in range(len(frame.names)) if i != c]
    np.testing.assert_array_equal(held.board_mean_w[:, others],
                                  frame.board_mean_w[60:120][:, others])
    assert np.isfinite(frame.board_mean_w[60:120, c]).all()    # the caller's frame untouched


def test_rows_are_packed_as_they_come_one_second_at_a_time(frame, tmp_path):
    learner = OnlineLearner(1e9, {}, tmp_path)
    for k in range(1000):
        learner.add(frame.rows(k, k + 1), _ok(frame))
    assert len(learner._chunks) == 1 and len(learner._frames) == 400   # a chunk of 600
    assert online._load_chunks([str(learner._chunks[0])]).board_mean_w.dtype == np.float32
    held = _held(learner)
    np.testing.assert_array_equal(held.t_unix, frame.t_unix[:1000])
    np.testing.assert_allclose(held.board_mean_w, frame.board_mean_w[:1000], rtol=1e-6)
    learner.close()


def test_packed_chunks_are_files_and_only_the_newest_rows_stay_in_memory(frame, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(online, "CHUNK_ROWS", 300)             # 2 chunks fit in the frame
    n = 2 * online.CHUNK_ROWS + 7
    learner = OnlineLearner(1e9, {}, tmp_path)
    for k in range(n):
        learner.add(frame.rows(k, k + 1), _ok(frame))
    assert learner.collected_s == n
    assert sum(len(f) for f in learner._frames) == 7 < online.CHUNK_ROWS
    [work] = _work_dirs(tmp_path)
    assert len(learner._chunks) == 2
    for p in learner._chunks:
        assert p.parent == work and p.is_file() and p.suffix == ".npz"
        with np.load(p, allow_pickle=False) as z:              # arrays only, no pickles
            assert z["names"].dtype.kind == "U" and len(z["t_unix"]) == online.CHUNK_ROWS
    np.testing.assert_array_equal(_held(learner).t_unix, frame.t_unix[:n])
    learner.close()
    assert _work_dirs(tmp_path) == []                          # close() removes it
    learner.add(frame.rows(n, n + online.CHUNK_ROWS), _ok(frame))
    assert _work_dirs(tmp_path) == [] and learner._frames == []   # and keeps nothing after


def test_the_model_from_chunks_on_disk_is_the_one_from_memory(frame, tmp_path, monkeypatch):
    """The child gets bit for bit the frame the learner used to join in memory (float32
    chunks, the rest as added, blanked seconds included) and fits the same model."""
    monkeypatch.setattr(online, "CHUNK_ROWS", 200)             # 5 chunks and 80 rows
    # float64 figures that float32 cannot hold: the packed rows are rounded, the rest not
    frame = HealthFrame(frame.t_unix, frame.names, frame.kinds, **{
        f: getattr(frame, f).astype(np.float64) * (1 + 1e-9) for f in FRAME_FIELDS})
    learner = OnlineLearner(len(frame), {"trees": 20}, tmp_path / "models")
    added = []
    for k in range(len(frame)):
        row = frame.rows(k, k + 1)
        watch = 300 <= k < 420
        learner.add(row, _ok(frame, srv02="watch") if watch else _ok(frame))
        added.append(_blanked(row, "srv02") if watch else row)
    assert "child process" in learner.state and learner._frames == []
    assert len(learner._chunks) == 6                           # the rest, as the last chunk
    [work] = _work_dirs(tmp_path / "models")
    before = _as_held_in_memory(added, 200)
    given = online._load_chunks([str(p) for p in learner._chunks])
    assert np.isnan(given.board_mean_w[300:420, frame.column("srv02")]).all()
    np.testing.assert_array_equal(given.t_unix, before.t_unix)
    assert (given.names, given.kinds) == (before.names, before.kinds)
    assert given.util.dtype == np.float64 and given.util[0, 0] != frame.util[0, 0]
    assert given.util[-1, 0] == frame.util[-1, 0]
    for f in FRAME_FIELDS:
        a, b = getattr(given, f), getattr(before, f)
        assert a.dtype == b.dtype, f
        assert a.tobytes() == b.tobytes(), f                   # bit for bit, NaNs included
    model = _wait(learner)
    assert model is not None, learner.state
    assert not work.exists() and _work_dirs(tmp_path / "models") == []
    reference = HealthModel.fit(before, HealthConfig.from_mapping({"trees": 20}))
    assert reference.save(tmp_path / "reference.json").read_text() == learner.path.read_text()


def test_a_model_is_learned_in_a_child_once_enough_is_held(frame, tmp_path):
    learner = OnlineLearner(len(frame), {"trees": 20}, tmp_path / "models")
    for k in range(0, len(frame), 30):
        assert learner.poll() is None
        learner.add(frame.rows(k, min(k + 30, len(frame))), _ok(frame))
    assert "child process" in learner.state
    model = _wait(learner)
    assert model is not None, learner.state
    assert model.names == frame.names and model.config["trees"] == 20
    assert learner.path.parent == tmp_path / "models" and learner.path.is_file()
    assert "learned from" in learner.state
    learner.add(frame.rows(0, 10), _ok(frame))                 # done: nothing more is kept
    assert learner.collected_s == len(frame)


def test_a_failed_fit_is_said_and_not_retried(frame, tmp_path):
    learner = OnlineLearner(120, {}, tmp_path)                  # 2 minutes: too few to fit
    learner.add(frame.rows(0, 120), _ok(frame))
    assert _wait(learner) is None
    assert learner.state.startswith("learning failed:") and "minutes" in learner.state
    assert learner.poll() is None and learner.path is None


def test_the_working_folder_goes_after_a_failed_fit(frame, tmp_path, monkeypatch):
    monkeypatch.setattr(online, "CHUNK_ROWS", 50)
    learner = OnlineLearner(120, {}, tmp_path)                  # too few to fit
    for k in range(120):
        learner.add(frame.rows(k, k + 1), _ok(frame))
    [work] = _work_dirs(tmp_path)
    assert len(list(work.iterdir())) == 3                      # 50 + 50 + the last 20
    assert _wait(learner) is None
    assert learner.state.startswith("learning failed:") and "minutes" in learner.state
    assert _work_dirs(tmp_path) == []


def test_close_during_a_fit_removes_the_working_folder(frame, tmp_path):
    learner = OnlineLearner(len(frame), {"trees": 20}, tmp_path)
    for k in range(len(frame)):
        learner.add(frame.rows(k, k + 1), _ok(frame))
    assert "child process" in learner.state and len(_work_dirs(tmp_path)) == 1
    learner.close()
    assert _work_dirs(tmp_path) == []


def test_a_folder_that_cannot_be_made_stops_learning_not_the_caller(frame, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the learn folder's parent should be")
    folder = blocker / "models"
    learner = OnlineLearner(1e9, {}, folder)
    for k in range(online.CHUNK_ROWS + 10):                    # the first chunk fails
        learner.add(frame.rows(k, k + 1), _ok(frame))
    assert learner.done and learner.poll() is None and learner.path is None
    assert learner.state.startswith(f"learning failed: cannot write {folder}: ")
    assert learner.collected_s == online.CHUNK_ROWS             # nothing more is kept
    assert learner._frames == [] and learner._chunks == []
    learner.close()


def test_a_full_disk_stops_learning_and_removes_what_was_written(frame, tmp_path,
                                                                 monkeypatch):
    real_save, saved = online._save_chunk, []

    def save(chunk, path):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(chunk, path)
        saved.append(path)

    monkeypatch.setattr(online, "CHUNK_ROWS", 50)
    monkeypatch.setattr(online, "_save_chunk", save)
    learner = OnlineLearner(1e9, {}, tmp_path)
    for k in range(120):
        learner.add(frame.rows(k, k + 1), _ok(frame))
    assert learner.done and learner.collected_s == 100
    assert learner.state == (f"learning failed: cannot write {saved[0].parent}/chunk-00001.npz:"
                             " [Errno 28] No space left on device")
    assert _work_dirs(tmp_path) == []


def test_a_last_chunk_that_cannot_be_written_is_said(frame, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    learner = OnlineLearner(60, {}, blocker)                    # the learn folder is a file
    learner.add(frame.rows(0, 60), _ok(frame))                  # enough: the rest fails
    assert learner.done and learner._starter is None and learner.poll() is None
    assert learner.state.startswith(f"learning failed: cannot write {blocker}: ")


def test_learn_s_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="learn_s"):
        OnlineLearner(0, HealthConfig().as_dict(), tmp_path)


def test_the_child_is_started_off_the_callers_thread(frame, tmp_path, monkeypatch):
    """add() returns while the child is still being started; poll() waits for the start."""
    import multiprocessing.context as mpc
    import threading

    release, started = threading.Event(), threading.Event()
    real_start = mpc.SpawnProcess.start

    def slow_start(proc):
        started.set()
        assert release.wait(60), "the test never released the start"
        real_start(proc)

    monkeypatch.setattr(mpc.SpawnProcess, "start", slow_start)
    learner = OnlineLearner(len(frame), {"trees": 20}, tmp_path)
    learner.add(frame, _ok(frame))                   # enough: the start begins, held on its way
    assert started.wait(60)
    assert learner.poll() is None and not learner.done
    assert "child process" in learner.state
    learner.add(frame.rows(0, 10), _ok(frame))       # nothing more is kept once it started
    assert learner.collected_s == len(frame)
    release.set()
    model = _wait(learner)
    assert model is not None, learner.state


def test_a_child_that_cannot_start_is_said(frame, tmp_path, monkeypatch):
    import multiprocessing.context as mpc

    def no_start(proc):
        raise OSError("no more processes")

    monkeypatch.setattr(mpc.SpawnProcess, "start", no_start)
    learner = OnlineLearner(60, {}, tmp_path)
    learner.add(frame.rows(0, 60), _ok(frame))
    assert _wait(learner) is None
    assert learner.state == "learning failed: cannot start the child: no more processes"
