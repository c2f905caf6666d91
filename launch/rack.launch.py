"""Launch rackpower's node graph for one rack, each node in its own process.

    ros2 launch rackpower rack.launch.py rack:=rack_07 serial_port:=/dev/ttyACM0
    ros2 launch rackpower rack.launch.py use_sim:=true            # against the built-in simulator
    ros2 launch rackpower rack.launch.py use_sim:=true mode:=reactive

Arguments:
    rack         namespace of every topic and node (/<rack>/power_samples, ...)
    config       parameter YAML (one `/**/<node>: ros__parameters:` section per node)
    serial_port  the sensor board's device or pyserial URL; empty keeps the config's serial.port
    model        a versioned model directory for the predictor; empty keeps the config's
    use_sim      start the rack simulator (sensor board on a pty, node_exporter endpoints on
                 127.0.0.1:9101.., Modbus TCP PDUs on 127.0.0.1:5020.., the servers' Redfish
                 BMCs on 127.0.0.1:5080) and read it instead of hardware
    mode         allocation mode of pdu_actuator (proactive, reactive, static, safe); empty
                 keeps the config's
    budget_source  where pdu_actuator takes its budget: config, or coordinator (a
                 power_coordinator's grants on rack_budget; the config must give
                 budget.guaranteed_w, docs/room.md); empty keeps the config's
    guaranteed_w the rack's guaranteed share in the power tree, W (budget.guaranteed_w);
                 empty keeps the config's
    data_dir     the folder of every rack's data (default /var/lib/rackpower): this rack's
                 recorder bags, model registry and online-learned health model are always
                 <data_dir>/<rack>/{bags,models,health}, and the bags are named
                 <rack>_<start time>; the config's own output.folder, output.prefix,
                 bags.folder, registry.root and health.learn_dir are not used under this
                 launch; e.g. data_dir:=$HOME/rackpower
    sim_port_offset  with use_sim: added to every simulator port (node_exporters 9101..,
                 PDUs 5020.., BMCs 5080) and to every loopback device address in the config
                 (host_telemetry's hosts.urls, pdu_actuator's pdus.urls and
                 components.power_cap_url, health_monitor's reference.pdus.urls and
                 psu_meters.components.url), so a second simulated rack runs beside the
                 first (e.g. sim_port_offset:=100; multiples of 100 keep racks' ports
                 apart); default 0.
                 A real rack has its own config with its own device addresses: the offset is
                 ignored without use_sim
    sim_seed     with use_sim: the simulator's seed (empty: rack_sim.yaml's), so two
                 simulated racks do not draw the same load
    metrics      true: also start metrics_exporter, the rack's Prometheus endpoint (default
                 false); it listens on loopback only unless the config's
                 /**/metrics_exporter http.address says otherwise (docs/metrics.md)
    metrics_port TCP port of that endpoint (default 9470; a second rack with metrics:=true
                 on the same machine needs its own, e.g. metrics_port:=9471)
    rack_view    true (default): also start rack_view, the rack drawn as RViz markers on
                 /<rack>/rack_markers (config/rviz/rack.rviz, docs/operator-views.md)
    composed     true: every node in one process, rack_composed (one executor, the same node
                 classes; about a fifth of the memory, docs in nodes/composed.py)

The rack name reaches everything that is the rack's: the namespace, every node's
`frame_id` (current_sensor, host_telemetry, predictor, pdu_actuator, health_monitor; rack_view
draws in the allocation's frame and metrics_exporter labels with the namespace), the
recorder's bag prefix, the data folders above and, with use_sim, the board link
/tmp/rackpower_<rack>_board. The launch log says the rack's data folder in one line.
Two racks in one DDS domain: `rack:=rack_a use_sim:=true` and `rack:=rack_b use_sim:=true
sim_port_offset:=100 sim_seed:=2` share no topic, device, file or port.

Every node is restarted when it crashes (`respawn`), but not when it stopped cleanly (exit
0: a SIGINT or SIGTERM sent to it alone) nor when it exits with a configuration error (exit
code 2: a bad parameter, named in its log): restarting cannot fix that, so the launch log
says so and the node stays down while the rest of the graph runs (pdu_actuator, left without
samples or forecasts, holds the safe allocation).

pdu_actuator is a lifecycle node: with its `autostart` parameter (the default) it configures
and activates itself once its PDUs and BMCs answer; otherwise drive it with `ros2 lifecycle
set`. It reads the BMC password from the variable its `power_caps.password_env` names
(RACKPOWER_BMC_PASSWORD) or from `power_caps.password_file`; with use_sim the simulator's
password is passed to it, and to health_monitor, which reads the BMCs' PSU meters
(`psu_meters.*`, read only) with the same variable or file.
"""
import os
import tempfile
from urllib.parse import urlsplit, urlunsplit

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare

from rackpower_nodes.tools.launch_actions import respawned

SIM_BOARD_LINK = "/tmp/rackpower_{rack}_board"
SIM_PORTS = {"exporter": 9101, "pdu": 5020, "bmc": 5080}   # rackpower-sim live's defaults
DEFAULT_DATA_DIR = "/var/lib/rackpower"
# the nodes that declare `frame_id` (rack_view's '' follows the allocation's frame)
FRAME_NODES = ("current_sensor", "host_telemetry", "predictor", "pdu_actuator",
               "health_monitor")
NODE_NAMES = FRAME_NODES + ("recorder", "retrain_scheduler", "metrics_exporter", "rack_view")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SIM_BMC_PASSWORD = "rackpower"         # the simulated BMCs' password (rackpower-sim live)


def shift_loopback_url(url: str, offset: int) -> str:
    """`url` with `offset` added to its port when it names a loopback host and a port (the
    simulator's devices); any other text is returned unchanged. ValueError when the shifted
    port is outside 1..65535."""
    if not offset or "://" not in url:
        return url
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:          # not a port: the node names it
        return url
    if port is None or parts.hostname not in LOOPBACK:
        return url
    if not 0 < port + offset < 65536:
        raise ValueError(f"sim_port_offset:={offset} moves {url} to port {port + offset}, "
                         "outside 1..65535")
    userinfo, _, _ = parts.netloc.rpartition("@")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port + offset}"))


def _flatten(tree, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def node_params(config: dict, node: str, rack: str) -> dict:
    """The parameters (dotted names) that a parameter YAML gives `node` in `/<rack>`: every
    section matching it (`/**/<node>`, `/<rack>/<node>`, `<node>`, `/**`), in file order."""
    params = {}
    for key, section in (config or {}).items():
        namespace, _, name = str(key).rpartition("/")
        if name == "**" and namespace == "":
            namespace = "/**"
        elif name != node:
            continue
        if namespace.strip("/") in ("", "**", rack) and isinstance(section, dict):
            params.update(_flatten(section.get("ros__parameters") or {}))
    return params


def rack_overrides(rack: str, data_dir: str, use_sim: bool, port_offset: int,
                   config: dict) -> dict:
    """The parameters this launch gives each node (name -> {dotted name: value}) so that the
    rack name reaches everything: `frame_id`, the recorder's prefix and the data folders
    (<data_dir>/<rack>/{bags,models,health}; data_dir '' = DEFAULT_DATA_DIR) and, with
    `use_sim`, every loopback device address in `config` (the parsed parameter YAML)
    shifted by `port_offset`, as the simulator's ports are."""
    rack_dir = os.path.join(os.path.expanduser(data_dir or DEFAULT_DATA_DIR), rack)
    out = {node: {} for node in NODE_NAMES}
    for node in FRAME_NODES:
        out[node]["frame_id"] = rack
    out["recorder"].update({"output.folder": os.path.join(rack_dir, "bags"),
                            "output.prefix": rack.replace("/", "_")})
    out["retrain_scheduler"].update({"bags.folder": os.path.join(rack_dir, "bags"),
                                     "registry.root": os.path.join(rack_dir, "models")})
    out["health_monitor"]["health.learn_dir"] = os.path.join(rack_dir, "health")
    if use_sim and port_offset:
        for node in NODE_NAMES:
            for name, value in node_params(config, node, rack).items():
                if isinstance(value, str):
                    shifted = shift_loopback_url(value, port_offset)
                elif isinstance(value, list) and value and all(
                        isinstance(v, str) for v in value):
                    shifted = [shift_loopback_url(v, port_offset) for v in value]
                else:
                    continue
                if shifted != value:
                    out[node][name] = shifted
    return out


def sim_ports(port_offset: int) -> dict:
    """The simulator's first node_exporter, first PDU and BMC ports for `port_offset`."""
    ports = {kind: port + port_offset for kind, port in SIM_PORTS.items()}
    if not all(0 < p < 65500 for p in ports.values()):
        raise ValueError(f"sim_port_offset:={port_offset} moves the simulator's ports to "
                         f"{ports}: outside 1..65499")
    return ports


def _port_offset(text: str) -> int:
    try:
        return int(text.strip() or "0")
    except ValueError:
        raise ValueError(f"sim_port_offset:={text!r}: expected a whole number of ports, "
                         "e.g. 100") from None


def _load_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"config:={path}: cannot read it to shift the simulator's device "
                         f"addresses ({exc})") from exc


def composed_params(rack: str, per_node: dict) -> dict:
    """`per_node`'s overrides as a parameter YAML for rack_composed: one `/<rack>/<node>`
    section each (a dict given to launch_ros would reach every node of the process, and each
    node rejects the keys it does not declare)."""
    return {f"/{rack}/{node}": {"ros__parameters": dict(params)}
            for node, params in per_node.items() if params}


def _composed(rack, config, per_node, metrics, rack_view, env) -> list:
    """rack_composed: every node in one process (one executor), the same node classes and
    parameters as the separate processes; restarted on a crash like them."""
    with tempfile.NamedTemporaryFile("w", prefix=f"rackpower_{rack.replace('/', '_')}_",
                                     suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(composed_params(rack, per_node), fh)
    args = (["--metrics"] if metrics else []) + ([] if rack_view else ["--no-rack-view"])
    # no name=: it would rename every node of the process
    return respawned(Node(
        package="rackpower", executable="rack_composed", namespace=rack, arguments=args,
        parameters=[config, fh.name], output="screen", additional_env=env, respawn=True,
        respawn_delay=2.0), label=f"/{rack}/rack_composed")


def _launch_setup(context):
    rack = LaunchConfiguration("rack").perform(context).strip("/")
    config = LaunchConfiguration("config").perform(context)
    serial_port = LaunchConfiguration("serial_port").perform(context)
    use_sim = LaunchConfiguration("use_sim").perform(context).lower() in ("true", "1", "yes")
    model = LaunchConfiguration("model").perform(context)
    mode = LaunchConfiguration("mode").perform(context)
    data_dir = LaunchConfiguration("data_dir").perform(context)
    metrics = LaunchConfiguration("metrics").perform(context).lower() in ("true", "1", "yes")
    metrics_port = LaunchConfiguration("metrics_port").perform(context).strip()
    rack_view = LaunchConfiguration("rack_view").perform(context).lower() in ("true", "1", "yes")
    offset = _port_offset(LaunchConfiguration("sim_port_offset").perform(context))
    sim_seed = LaunchConfiguration("sim_seed").perform(context).strip()

    overrides = rack_overrides(rack, data_dir, use_sim, offset,
                               _load_config(config) if use_sim and offset else {})
    get_logger("launch").info(
        f"rack {rack}: data in {os.path.dirname(overrides['recorder']['output.folder'])}")
    actions = []
    sensor_overrides = overrides["current_sensor"]
    telemetry_overrides = overrides["host_telemetry"]
    predictor_overrides = overrides["predictor"]
    actuator_overrides = overrides["pdu_actuator"]
    if mode:
        actuator_overrides["mode"] = mode
    budget_source = LaunchConfiguration("budget_source").perform(context)
    if budget_source:        # the node checks it (and budget.guaranteed_w) and names errors
        actuator_overrides["budget.source"] = budget_source
    guaranteed = LaunchConfiguration("guaranteed_w").perform(context).strip()
    if guaranteed:
        try:
            actuator_overrides["budget.guaranteed_w"] = float(guaranteed)
        except ValueError:
            actuator_overrides["budget.guaranteed_w"] = guaranteed   # named by the node
    actuator_env = {}
    recorder_overrides = overrides["recorder"]
    retrain_overrides = overrides["retrain_scheduler"]
    health_overrides = overrides["health_monitor"]
    if use_sim:
        ports = sim_ports(offset)
        serial_port = serial_port or SIM_BOARD_LINK.format(rack=rack.replace("/", "_"))
        sim_config = PathJoinSubstitution(
            [FindPackageShare("rackpower"), "config", "rack_sim.yaml"])
        rack_sim = PathJoinSubstitution(
            [FindPackagePrefix("rackpower"), "lib", "rackpower", "rackpower-sim"])
        if sim_seed and not sim_seed.isdigit():
            raise ValueError(f"sim_seed:={sim_seed!r}: expected a whole number >= 0")
        seed = ["--seed", sim_seed] if sim_seed else []
        actions.append(ExecuteProcess(
            cmd=[rack_sim, "live", "--link", serial_port, "--config", sim_config,
                 "--exporter-base-port", str(ports["exporter"]),
                 "--pdu-base-port", str(ports["pdu"]), "--bmc-port", str(ports["bmc"]),
                 *seed],
            name="rack_sim", output="screen"))
        actuator_env["RACKPOWER_BMC_PASSWORD"] = SIM_BMC_PASSWORD
        telemetry_overrides["schedule.file"] = sim_config
        predictor_overrides["schedule.file"] = sim_config
    if serial_port:
        sensor_overrides["serial.port"] = serial_port
    if model:
        predictor_overrides["model.path"] = model

    per_node = {"current_sensor": sensor_overrides, "host_telemetry": telemetry_overrides,
                "predictor": predictor_overrides, "pdu_actuator": actuator_overrides,
                "recorder": recorder_overrides, "health_monitor": health_overrides,
                "retrain_scheduler": retrain_overrides, "rack_view": overrides["rack_view"],
                "metrics_exporter": {**overrides["metrics_exporter"], "http.port": (
                    int(metrics_port) if metrics_port.isdigit() else metrics_port)}}
    # (a port that is not a number reaches the node as text: it exits 2 naming http.port)
    if LaunchConfiguration("composed").perform(context).lower() in ("true", "1", "yes"):
        per_node = {node: {k: v.perform(context) if hasattr(v, "perform") else v
                           for k, v in params.items()} for node, params in per_node.items()}
        return actions + _composed(rack, config, per_node, metrics, rack_view, actuator_env)
    actions += respawned(Node(
        package="rackpower", executable="current_sensor", name="current_sensor",
        namespace=rack, parameters=[config, sensor_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += respawned(Node(
        package="rackpower", executable="host_telemetry", name="host_telemetry",
        namespace=rack, parameters=[config, telemetry_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += respawned(Node(
        package="rackpower", executable="predictor", name="predictor",
        namespace=rack, parameters=[config, predictor_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += respawned(LifecycleNode(
        package="rackpower", executable="pdu_actuator", name="pdu_actuator",
        namespace=rack, parameters=[config, actuator_overrides], output="screen",
        additional_env=actuator_env, respawn=True, respawn_delay=2.0))
    actions += respawned(Node(
        package="rackpower", executable="recorder", name="recorder",
        namespace=rack, parameters=[config, recorder_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += respawned(Node(
        package="rackpower", executable="health_monitor", name="health_monitor",
        namespace=rack, parameters=[config, health_overrides], output="screen",
        additional_env=actuator_env, respawn=True, respawn_delay=2.0))
    actions += respawned(Node(
        package="rackpower", executable="retrain_scheduler", name="retrain_scheduler",
        namespace=rack, parameters=[config, retrain_overrides], output="screen",
        respawn=True, respawn_delay=5.0))
    if metrics:
        actions += respawned(Node(
            package="rackpower", executable="metrics_exporter", name="metrics_exporter",
            namespace=rack, output="screen",
            parameters=[config, per_node["metrics_exporter"]], respawn=True, respawn_delay=2.0))
    if rack_view:
        actions += respawned(Node(
            package="rackpower", executable="rack_view", name="rack_view",
            namespace=rack, parameters=[config, overrides["rack_view"]], output="screen",
            respawn=True, respawn_delay=2.0))
    return actions


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare("rackpower"), "config", "rack.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("rack", default_value="rack_01",
                              description="Rack namespace for every node and topic"),
        DeclareLaunchArgument("config", default_value=default_config,
                              description="Parameter YAML for the rack's nodes"),
        DeclareLaunchArgument("serial_port", default_value="",
                              description="Sensor board device or pyserial URL "
                                          "(empty: the config's serial.port)"),
        DeclareLaunchArgument("model", default_value="",
                              description="Model directory for the predictor "
                                          "(empty: the config's model.path)"),
        DeclareLaunchArgument("use_sim", default_value="false", choices=["true", "false"],
                              description="Run the rack simulator instead of hardware"),
        DeclareLaunchArgument("mode", default_value="",
                              description="pdu_actuator allocation mode (empty: the config's)"),
        DeclareLaunchArgument("budget_source", default_value="",
                              description="pdu_actuator budget.source: config or coordinator "
                                          "(docs/room.md; empty: the config's)"),
        DeclareLaunchArgument("guaranteed_w", default_value="",
                              description="pdu_actuator budget.guaranteed_w, W: the rack's "
                                          "share in the power tree (empty: the config's)"),
        DeclareLaunchArgument("data_dir", default_value=DEFAULT_DATA_DIR,
                              description="Folder of the racks' data: bags, model registry "
                                          "and health model in <data_dir>/<rack>/ (the "
                                          "config's folders are not used)"),
        DeclareLaunchArgument("sim_port_offset", default_value="0",
                              description="With use_sim: added to the simulator's ports and "
                                          "the config's loopback device addresses (a second "
                                          "simulated rack: 100)"),
        DeclareLaunchArgument("sim_seed", default_value="",
                              description="With use_sim: the simulator's seed (empty: "
                                          "rack_sim.yaml's)"),
        DeclareLaunchArgument("metrics", default_value="false", choices=["true", "false"],
                              description="Also start metrics_exporter (Prometheus /metrics)"),
        DeclareLaunchArgument("metrics_port", default_value="9470",
                              description="TCP port of the metrics_exporter's /metrics"),
        DeclareLaunchArgument("composed", default_value="false", choices=["true", "false"],
                              description="Every node in one process (rack_composed): less "
                                          "memory, for small controllers"),
        DeclareLaunchArgument("rack_view", default_value="true", choices=["true", "false"],
                              description="Also start rack_view (RViz markers of the rack)"),
        OpaqueFunction(function=_launch_setup),
    ])
