"""config/rack.yaml: every node's section parses into a valid configuration."""
from __future__ import annotations

from conftest import REPO

from rackpower_nodes.core.actuator_config import load_actuator_config_yaml
from rackpower_nodes.core.predictor_config import load_predictor_config_yaml
from rackpower_nodes.core.recorder_config import load_recorder_config_yaml
from rackpower_nodes.core.retrain_config import load_retrain_config_yaml
from rackpower_nodes.core.sensor_config import load_sensor_config_yaml

CONFIG = REPO / "config" / "rack.yaml"


def test_every_section_is_valid_and_they_agree():
    sensor = load_sensor_config_yaml(CONFIG)
    predictor = load_predictor_config_yaml(CONFIG)
    actuator = load_actuator_config_yaml(CONFIG)
    recorder = load_recorder_config_yaml(CONFIG)
    retrain = load_retrain_config_yaml(CONFIG)
    names = [c.id for c in actuator.components]
    # one component list across the graph
    assert list(predictor.components) == names
    assert [c.component for c in sensor.channels] == names
    # floors are the idle powers the predictor knows; ceilings above the maxima
    assert [c.floor_w for c in actuator.components] == list(predictor.idle_w)
    assert all(c.ceiling_w > m for c, m in zip(actuator.components, predictor.max_w))
    # the budget the scheduler's load rule uses is the actuator's
    assert retrain.policy.budget_w == actuator.policy.budget_w == 3680.0
    assert str(recorder.folder) == retrain.settings["bag_folder"]
    assert set(recorder.topics) >= {"power_samples", "host_telemetry", "allocation_error"}
