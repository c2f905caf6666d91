"""Fan wear on an 8-GPU server: its training jobs swing its draw by kW and fill the ripple
band, so the fan is found by its ripple in the server's quiet (idle) minutes, read against
what the workload explains there. Learned on a clean tuning-seed day of the ai rack."""
from __future__ import annotations

import pytest
from helpers.health_sim import fault_frame, sim_frame

from rackpower_nodes.core.health import HealthConfig, HealthModel, HealthMonitor
from rackpower_nodes.sim.faults import FaultSpec
from rackpower_nodes.tools.health_eval_data import fault_marks, replay

H = 3600.0


@pytest.fixture(scope="module")
def model() -> HealthModel:
    return HealthModel.fit(sim_frame(24, 147, "ai"), HealthConfig())


def _new_faults(model, frame):
    mon = HealthMonitor(frame.names, frame.kinds, model, HealthConfig())
    return [m for m in fault_marks(replay(mon, frame)) if m.new]


def test_a_worn_fan_on_a_gpu_server_is_found_from_its_ripple(model):
    """+12 W with its hunting from 2 h on gpu03 (a ~5 kW server; its training jobs move it
    by ~3 kW): named fan wear within the day. Before the quiet-minute ripple it was not
    found at all (the power residual there wanders by +-100 W an hour)."""
    frame = fault_frame(16, 148, [FaultSpec("fan_wear", "gpu03", 2 * H, 0.0, 12.0,
                                            growth="step")], "ai")
    marks = _new_faults(model, frame)
    assert [m.component for m in marks] == ["gpu03"], marks
    assert marks[0].cause == "fan_wear"
    assert marks[0].t_unix - frame.t_unix[0] > 2 * H


def test_the_same_day_without_the_fault_raises_nothing(model):
    assert _new_faults(model, sim_frame(16, 148, "ai")) == []
