"""config/rack.yaml: every node's section parses into a valid configuration;
config/rack.example.yaml: refused until its placeholders are filled in."""
from __future__ import annotations

import pytest
import yaml
from helpers import REPO

from rackpower_nodes.core.actuator_config import check_outlets_in_maps, load_actuator_config_yaml
from rackpower_nodes.core.health_monitor_config import load_health_monitor_config_yaml
from rackpower_nodes.core.metrics_exporter_config import load_metrics_exporter_config_yaml
from rackpower_nodes.core.params import PLACEHOLDER_RE, ConfigError, flatten_parameters
from rackpower_nodes.core.pdu_map import load_register_map
from rackpower_nodes.core.predictor_config import load_predictor_config_yaml
from rackpower_nodes.core.recorder_config import load_recorder_config_yaml
from rackpower_nodes.core.retrain_config import load_retrain_config_yaml
from rackpower_nodes.core.sensor_config import load_sensor_config_yaml
from rackpower_nodes.core.telemetry_config import load_telemetry_config_yaml

CONFIG = REPO / "config" / "rack.yaml"


def test_every_section_is_valid_and_they_agree():
    sensor = load_sensor_config_yaml(CONFIG)
    predictor = load_predictor_config_yaml(CONFIG)
    actuator = load_actuator_config_yaml(CONFIG)
    recorder = load_recorder_config_yaml(CONFIG)
    retrain = load_retrain_config_yaml(CONFIG)
    health = load_health_monitor_config_yaml(CONFIG)
    names = [c.id for c in actuator.components]
    # one component list across the graph
    assert list(predictor.components) == names
    assert list(health.names) == names
    # the health monitor's reference meters are the actuator's outlets
    wired = {c: (p.name, o) for p in health.reference_pdus for c, o in zip(p.components,
                                                                            p.outlets)}
    assert wired == dict(zip(names, actuator.outlets))
    assert [(p.name, p.url) for p in health.reference_pdus] == \
        [(p.name, p.url) for p in actuator.pdus]
    assert [c.component for c in sensor.channels] == names
    # floors are the idle powers the predictor knows; ceilings above the maxima
    assert [c.floor_w for c in actuator.components] == list(predictor.idle_w)
    assert all(c.ceiling_w > m for c, m in zip(actuator.components, predictor.max_w))
    # the budget the scheduler's load rule uses is the actuator's
    assert retrain.policy.budget_w == actuator.policy.budget_w == 3680.0
    # the metrics' forecast window is the actuator's; the endpoint stays on loopback
    metrics = load_metrics_exporter_config_yaml(CONFIG)
    assert (metrics.lead_s, metrics.window_s) == (actuator.policy.lead_s,
                                                  actuator.policy.window_s)
    assert metrics.address == "127.0.0.1"
    assert str(recorder.folder) == retrain.settings["bag_folder"]
    assert set(recorder.topics) >= {"power_samples", "host_telemetry", "allocation_error",
                                    "component_health"}


def test_the_simulated_racks_outlets_are_in_its_pdu_maps():
    actuator = load_actuator_config_yaml(CONFIG)
    check_outlets_in_maps(actuator, {p.name: load_register_map(p.register_map).outlets
                                     for p in actuator.pdus})


# ---------------------------------------------------------------- config/rack.example.yaml

EXAMPLE = REPO / "config" / "rack.example.yaml"
LOADERS = {"current_sensor": load_sensor_config_yaml, "host_telemetry": load_telemetry_config_yaml,
           "predictor": load_predictor_config_yaml, "pdu_actuator": load_actuator_config_yaml,
           "recorder": load_recorder_config_yaml, "retrain_scheduler": load_retrain_config_yaml,
           "health_monitor": load_health_monitor_config_yaml}
# what an operator of the example rack (4 servers and a switch on two PDUs) would fill in
FILLED = {
    ("current_sensor", "serial.port"): "/dev/ttyACM0",
    ("current_sensor", "channels.scale_a_per_count"): [0.001],
    ("current_sensor", "voltage.nominal_v"): [230.0],
    ("host_telemetry", "hosts.urls"): [f"http://10.0.7.1{i}:9100/metrics" for i in range(4)],
    ("predictor", "components.idle_w"): [64.0, 64.0, 45.0, 45.0, 222.0],
    ("predictor", "components.max_w"): [232.0, 232.0, 276.0, 276.0, 318.0],
    ("pdu_actuator", "budget.breaker_a"): 16.0,
    ("pdu_actuator", "budget.voltage_v"): 230.0,
    ("pdu_actuator", "budget.derating"): 0.8,
    ("pdu_actuator", "components.pdu"): ["pdu-a", "pdu-b", "pdu-a", "pdu-b", "pdu-a"],
    ("pdu_actuator", "components.outlet"): [1, 1, 2, 2, 24],
    ("pdu_actuator", "components.floor_w"): [64.0, 64.0, 45.0, 45.0, 222.0],
    ("pdu_actuator", "components.ceiling_w"): [570.0, 570.0, 800.0, 800.0, 450.0],
    ("pdu_actuator", "pdus.urls"): ["tcp://10.0.7.201:502", "tcp://10.0.7.202:502"],
    ("pdu_actuator", "pdus.maps"): ["xerus_style", "xerus_style"],
    ("retrain_scheduler", "offpeak.budget_w"): 2944.0,
}


def _placeholders(doc: dict) -> dict[tuple[str, str], str]:
    """{(node, dotted key): placeholder text} of every FILL_ME in the example."""
    found = {}
    for section, body in doc.items():
        node = section.rsplit("/", 1)[-1]
        for key, value in flatten_parameters(body["ros__parameters"]).items():
            if isinstance(value, str) and PLACEHOLDER_RE.match(value):
                found[(node, key)] = value
    return found


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[leaf] = value


def test_the_example_fails_naming_every_placeholder_until_filled(tmp_path):
    doc = yaml.safe_load(EXAMPLE.read_text())
    holes = _placeholders(doc)
    # the safety-critical values are among what an operator must fill
    critical = ("budget.breaker_a", "budget.voltage_v", "budget.derating", "components.pdu",
                "components.outlet", "pdus.urls", "pdus.maps")
    assert {("pdu_actuator", k) for k in critical} <= set(holes)
    assert set(holes) == set(FILLED), "the test's fill-in table must cover the example"
    for node, load in LOADERS.items():
        mine = sorted(key for n, key in holes if n == node)
        if not mine:
            load(EXAMPLE)
            continue
        with pytest.raises(ConfigError) as info:
            load(EXAMPLE)
        for key in mine:
            assert f"{key} = {holes[(node, key)]!r}: placeholder not filled in" in str(info.value)
    for (node, key), value in FILLED.items():
        _set(doc[f"/**/{node}"]["ros__parameters"], key, value)
    filled = tmp_path / "rack_07.yaml"
    filled.write_text(yaml.safe_dump(doc))
    configs = {node: load(filled) for node, load in LOADERS.items()}
    actuator = configs["pdu_actuator"]
    assert actuator.policy.budget_w == pytest.approx(2944.0)       # 16 A x 230 V x 0.8
    check_outlets_in_maps(actuator, {p.name: load_register_map(p.register_map).outlets
                                     for p in actuator.pdus})
    names = list(actuator.names)
    assert list(configs["predictor"].components) == names
    assert [c.component for c in configs["current_sensor"].channels] == names
    assert list(configs["health_monitor"].names) == names
