"""What launch/rack.launch.py gives each node so the rack name reaches everything (frame ids,
the recorder's prefix, the data folders) and a second simulated rack's device addresses follow
its simulator's ports: `rack_overrides` and its helpers, loaded from the launch file itself.
Two racks side by side, live: test_two_racks.py."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config" / "rack.yaml").read_text())


@pytest.fixture(scope="module")
def rl():
    pytest.importorskip("launch_ros", reason="launch_ros is installed by `make setup` from "
                                             "../shared/ros2-tools")
    spec = importlib.util.spec_from_file_location("rack_launch", REPO / "launch" /
                                                  "rack.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _port(url: str) -> int:
    return urlsplit(url).port


def test_frame_ids_prefix_and_data_folders_follow_the_rack(rl):
    out = rl.rack_overrides("rack_b", "/srv/rp", False, 0, CONFIG)
    for node in ("current_sensor", "host_telemetry", "predictor", "pdu_actuator",
                 "health_monitor"):
        assert out[node]["frame_id"] == "rack_b"
    assert "frame_id" not in out["rack_view"]            # follows the allocation's frame
    assert out["recorder"] == {"output.folder": "/srv/rp/rack_b/bags",
                               "output.prefix": "rack_b"}
    assert out["retrain_scheduler"] == {"bags.folder": "/srv/rp/rack_b/bags",
                                        "registry.root": "/srv/rp/rack_b/models"}
    assert out["health_monitor"]["health.learn_dir"] == "/srv/rp/rack_b/health"


@pytest.mark.parametrize("data_dir", ["", "/var/lib/rackpower"])
def test_data_folders_default_to_var_lib_rackpower_per_rack(rl, data_dir):
    out = rl.rack_overrides("rack_07", data_dir, True, 0, CONFIG)
    assert out["recorder"]["output.folder"] == "/var/lib/rackpower/rack_07/bags"
    assert out["retrain_scheduler"]["registry.root"] == "/var/lib/rackpower/rack_07/models"
    assert out["health_monitor"]["health.learn_dir"] == "/var/lib/rackpower/rack_07/health"


def test_home_in_data_dir_is_expanded(rl):
    out = rl.rack_overrides("r", "~/rackpower", False, 0, CONFIG)
    assert out["recorder"]["output.folder"] == str(Path.home() / "rackpower" / "r" / "bags")


def test_offset_moves_every_loopback_port_of_the_shipped_config(rl):
    """Every 127.0.0.1 port in config/rack.yaml is moved by the offset, and the moved
    addresses are the ones the simulator serves with that offset."""
    out = rl.rack_overrides("rack_b", "", True, 100, CONFIG)
    ports = rl.sim_ports(100)
    urls = out["host_telemetry"]["hosts.urls"]
    assert [_port(u) for u in urls] == [ports["exporter"] + i for i in range(len(urls))]
    pdus = out["pdu_actuator"]["pdus.urls"]
    assert [_port(u) for u in pdus] == [ports["pdu"], ports["pdu"] + 1]
    assert out["health_monitor"]["reference.pdus.urls"] == pdus
    caps = out["pdu_actuator"]["components.power_cap_url"]
    assert {_port(u) for u in caps if u} == {ports["bmc"]}
    assert caps[-4:] == ["", "", "", ""]                  # switches, storage: outlet only
    assert caps[0] == "http://127.0.0.1:5180/redfish/v1/Chassis/srv01"

    text = (REPO / "config" / "rack.yaml").read_text()
    shipped = sorted(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text))
    moved = sorted(_port(u) for node in out.values() for value in node.values()
                   for u in (value if isinstance(value, list) else [value])
                   if isinstance(u, str) and "127.0.0.1:" in u)
    assert moved == [p + 100 for p in shipped]


@pytest.mark.parametrize("use_sim, offset", [(False, 100), (True, 0)])
def test_device_addresses_stay_without_sim_or_offset(rl, use_sim, offset):
    """A real rack's config names its own devices: the offset is for simulated racks only."""
    out = rl.rack_overrides("rack_b", "", use_sim, offset, CONFIG)
    assert "pdus.urls" not in out["pdu_actuator"]
    assert "hosts.urls" not in out["host_telemetry"]


def test_rack_specific_sections_apply_to_their_rack_only(rl):
    config = {"/**/pdu_actuator": {"ros__parameters": {"pdus": {"urls": ["tcp://127.0.0.1:1"]}}},
              "/rack_b/pdu_actuator": {"ros__parameters": {"pdus": {
                  "urls": ["tcp://127.0.0.1:5020"]}}},
              "/**": {"ros__parameters": {"x": "http://localhost:80/"}}}
    assert rl.node_params(config, "pdu_actuator", "rack_a") == {
        "pdus.urls": ["tcp://127.0.0.1:1"], "x": "http://localhost:80/"}
    out = rl.rack_overrides("rack_b", "", True, 100, config)["pdu_actuator"]
    assert out["pdus.urls"] == ["tcp://127.0.0.1:5120"]
    assert out["x"] == "http://localhost:180/"


@pytest.mark.parametrize("url, moved", [
    ("tcp://127.0.0.1:5020", "tcp://127.0.0.1:5120"),
    ("http://admin@127.0.0.1:5080/redfish/v1", "http://admin@127.0.0.1:5180/redfish/v1"),
    ("http://[::1]:9101/metrics", "http://[::1]:9201/metrics"),
    ("http://localhost:9101/metrics?x=1", "http://localhost:9201/metrics?x=1"),
    ("http://10.0.0.5:9100/metrics", "http://10.0.0.5:9100/metrics"),   # not the simulator
    ("http://127.0.0.1/metrics", "http://127.0.0.1/metrics"),          # no port
    ("", ""),
    ("/tmp/rackpower_rack_01_board", "/tmp/rackpower_rack_01_board"),
    ("127.0.0.1", "127.0.0.1"),
])
def test_shift_loopback_url(rl, url, moved):
    assert rl.shift_loopback_url(url, 100) == moved


def test_bad_offsets_are_named(rl):
    with pytest.raises(ValueError, match=r"sim_port_offset:='lots'.*whole number"):
        rl._port_offset("lots")
    assert rl._port_offset(" ") == 0 and rl._port_offset("100") == 100
    with pytest.raises(ValueError, match=r"sim_port_offset:=60000 .*65535"):
        rl.shift_loopback_url("tcp://127.0.0.1:9101", 60000)
    with pytest.raises(ValueError, match=r"sim_port_offset:=-6000 "):
        rl.sim_ports(-6000)
    with pytest.raises(ValueError, match=r"config:=/nonexistent.yaml"):
        rl._load_config("/nonexistent.yaml")


def test_the_simulator_is_started_on_the_offset_ports_with_the_seed(rl, caplog):
    from launch import LaunchContext
    from launch.actions import ExecuteProcess

    context = LaunchContext()
    for action in rl.generate_launch_description().entities:     # the declared defaults
        if type(action).__name__ == "DeclareLaunchArgument" and action.name != "config":
            context.launch_configurations[action.name] = "".join(
                s.text for s in action.default_value)
    context.launch_configurations.update({
        "rack": "rack_b", "use_sim": "true", "sim_port_offset": "100", "sim_seed": "7",
        "config": str(REPO / "config" / "rack.yaml")})
    with caplog.at_level("INFO"):
        actions = rl._launch_setup(context)
    assert "rack rack_b: data in /var/lib/rackpower/rack_b" in caplog.text
    (sim,) = [a for a in actions if type(a) is ExecuteProcess]     # the nodes are subclasses
    words = ["".join(getattr(s, "text", "<subst>") for s in part) for part in sim.cmd]
    args = dict(zip(words[2::2], words[3::2]))
    assert args["--link"] == "/tmp/rackpower_rack_b_board"
    assert (args["--exporter-base-port"], args["--pdu-base-port"], args["--bmc-port"],
            args["--seed"]) == ("9201", "5120", "5180", "7")
    context.launch_configurations["sim_seed"] = "two"
    with pytest.raises(ValueError, match=r"sim_seed:='two': expected a whole number"):
        rl._launch_setup(context)


def test_composed_overrides_are_one_section_per_node_of_the_rack(rl):
    """composed:=true hands rack_composed the same overrides as the separate processes, in
    sections that each reach one node (a '/**' section would reach them all and be refused
    by every node that does not declare its keys)."""
    per_node = rl.rack_overrides("rack_c", "/srv/rp", True, 100, CONFIG)
    per_node["pdu_actuator"]["mode"] = "reactive"
    params = rl.composed_params("rack_c", per_node)
    assert "/**" not in params and all(k.startswith("/rack_c/") for k in params)
    assert params["/rack_c/pdu_actuator"]["ros__parameters"]["mode"] == "reactive"
    assert params["/rack_c/recorder"]["ros__parameters"]["output.folder"] == \
        "/srv/rp/rack_c/bags"
    assert set(params) == {f"/rack_c/{n}" for n, p in per_node.items() if p}
    # a YAML rclpy reads: every value a plain scalar or list
    assert yaml.safe_load(yaml.safe_dump(params)) == params
