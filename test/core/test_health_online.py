"""OnlineLearner: clean seconds collected, faulty ones left out, a model fitted in a child."""
from __future__ import annotations

import time

import numpy as np
import pytest

from rackpower_nodes.core.health import HealthFrame, HealthVerdict
from rackpower_nodes.core.health.config import HealthConfig
from rackpower_nodes.core.health.online import OnlineLearner
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
    assert len(learner._frames) == 1 + 400                     # one packed chunk of 600
    assert learner._frames[0].board_mean_w.dtype == np.float32
    held = HealthFrame.concat(learner._frames)
    np.testing.assert_array_equal(held.t_unix, frame.t_unix[:1000])
    np.testing.assert_allclose(held.board_mean_w, frame.board_mean_w[:1000], rtol=1e-6)


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
