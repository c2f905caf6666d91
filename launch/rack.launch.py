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
    data_dir     where the recorder's bags, the model registry and the online-learned health
                 model live; empty keeps the config's (/var/lib/rackpower/...); e.g.
                 data_dir:=$HOME/rackpower
    metrics      true: also start metrics_exporter, the rack's Prometheus endpoint (default
                 false); it listens on loopback only unless the config's
                 /**/metrics_exporter http.address says otherwise (docs/metrics.md)
    metrics_port TCP port of that endpoint (default 9470)
    rack_view    true (default): also start rack_view, the rack drawn as RViz markers on
                 /<rack>/rack_markers (config/rviz/rack.rviz, docs/operator-views.md)

Every node is restarted when it crashes (`respawn`), but not when it stopped cleanly (exit
0: a SIGINT or SIGTERM sent to it alone) nor when it exits with a configuration error (exit
code 2: a bad parameter, named in its log): restarting cannot fix that, so the launch log
says so and the node stays down while the rest of the graph runs (pdu_actuator, left without
samples or forecasts, holds the safe allocation).

pdu_actuator is a lifecycle node: with its `autostart` parameter (the default) it configures
and activates itself once its PDUs and BMCs answer; otherwise drive it with `ros2 lifecycle
set`. It reads the BMC password from the variable its `power_caps.password_env` names
(RACKPOWER_BMC_PASSWORD) or from `power_caps.password_file`; with use_sim the simulator's
password is passed to it.
"""
import os

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument, EmitEvent, ExecuteProcess, OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.events.process import ShutdownProcess
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare

SIM_BOARD_LINK = "/tmp/rackpower_{rack}_board"
SIM_BMC_PASSWORD = "rackpower"         # the simulated BMCs' password (rackpower-sim live)
EXIT_BAD_CONFIG = 2                    # rackpower_nodes.nodes.main.EXIT_BAD_CONFIG


def _respawned(node) -> list:
    """`node` (created with respawn=True and a respawn_delay > 0) is restarted after a crash
    but never after a configuration error, nor after it stopped cleanly (exit 0: it was sent
    SIGINT or SIGTERM, or shut down through its lifecycle): launch waits respawn_delay before
    it restarts a process, and in that time this exit handler ends the action (a
    ShutdownProcess event for it), so launch does not start it again. The clean case also
    ends the graph when launch itself missed a Ctrl-C that its processes got (launch can lose
    a SIGINT that arrives while it handles a process's output): every node stops, nothing is
    restarted, and launch exits as idle."""

    def on_exit(event, context):
        if context.is_shutdown or event.returncode not in (0, EXIT_BAD_CONFIG):
            return None
        if event.returncode == 0:
            get_logger("launch").info(f"{event.action.node_name} stopped cleanly (exit 0): "
                                      "not restarting it")
        else:
            get_logger("launch").error(
                f"{event.action.node_name} exited with a configuration error (exit "
                f"{EXIT_BAD_CONFIG}): not restarting it, since a restart cannot fix a "
                "parameter; its log above names the key")
        return [EmitEvent(event=ShutdownProcess(process_matcher=matches_action(event.action)))]

    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]


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

    actions = []
    sensor_overrides, telemetry_overrides, predictor_overrides = {}, {}, {}
    actuator_overrides = {"mode": mode} if mode else {}
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
    recorder_overrides, retrain_overrides, health_overrides = {}, {}, {}
    if data_dir:
        rack_dir = os.path.join(os.path.expanduser(data_dir), rack)
        recorder_overrides["output.folder"] = os.path.join(rack_dir, "bags")
        recorder_overrides["output.prefix"] = rack
        retrain_overrides["bags.folder"] = os.path.join(rack_dir, "bags")
        retrain_overrides["registry.root"] = os.path.join(rack_dir, "models")
        health_overrides["health.learn_dir"] = os.path.join(rack_dir, "health")
    if use_sim:
        serial_port = serial_port or SIM_BOARD_LINK.format(rack=rack)
        sim_config = PathJoinSubstitution(
            [FindPackageShare("rackpower"), "config", "rack_sim.yaml"])
        rack_sim = PathJoinSubstitution(
            [FindPackagePrefix("rackpower"), "lib", "rackpower", "rackpower-sim"])
        actions.append(ExecuteProcess(
            cmd=[rack_sim, "live", "--link", serial_port, "--config", sim_config,
                 "--exporter-base-port", "9101", "--pdu-base-port", "5020",
                 "--bmc-port", "5080"],
            name="rack_sim", output="screen"))
        actuator_env["RACKPOWER_BMC_PASSWORD"] = SIM_BMC_PASSWORD
        telemetry_overrides["schedule.file"] = sim_config
        predictor_overrides["schedule.file"] = sim_config
    if serial_port:
        sensor_overrides["serial.port"] = serial_port
    if model:
        predictor_overrides["model.path"] = model

    actions += _respawned(Node(
        package="rackpower", executable="current_sensor", name="current_sensor",
        namespace=rack, parameters=[config, sensor_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += _respawned(Node(
        package="rackpower", executable="host_telemetry", name="host_telemetry",
        namespace=rack, parameters=[config, telemetry_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += _respawned(Node(
        package="rackpower", executable="predictor", name="predictor",
        namespace=rack, parameters=[config, predictor_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += _respawned(LifecycleNode(
        package="rackpower", executable="pdu_actuator", name="pdu_actuator",
        namespace=rack, parameters=[config, actuator_overrides], output="screen",
        additional_env=actuator_env, respawn=True, respawn_delay=2.0))
    actions += _respawned(Node(
        package="rackpower", executable="recorder", name="recorder",
        namespace=rack, parameters=[config, recorder_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += _respawned(Node(
        package="rackpower", executable="health_monitor", name="health_monitor",
        namespace=rack, parameters=[config, health_overrides], output="screen",
        respawn=True, respawn_delay=2.0))
    actions += _respawned(Node(
        package="rackpower", executable="retrain_scheduler", name="retrain_scheduler",
        namespace=rack, parameters=[config, retrain_overrides], output="screen",
        respawn=True, respawn_delay=5.0))
    if metrics:
        # a port that is not a number reaches the node as text: it exits 2 naming http.port
        port = int(metrics_port) if metrics_port.isdigit() else metrics_port
        actions += _respawned(Node(
            package="rackpower", executable="metrics_exporter", name="metrics_exporter",
            namespace=rack, parameters=[config, {"http.port": port}], output="screen",
            respawn=True, respawn_delay=2.0))
    if rack_view:
        actions += _respawned(Node(
            package="rackpower", executable="rack_view", name="rack_view",
            namespace=rack, parameters=[config], output="screen",
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
        DeclareLaunchArgument("data_dir", default_value="",
                              description="Folder for bags and the model registry, one "
                                          "subfolder per rack (empty: the config's)"),
        DeclareLaunchArgument("metrics", default_value="false", choices=["true", "false"],
                              description="Also start metrics_exporter (Prometheus /metrics)"),
        DeclareLaunchArgument("metrics_port", default_value="9470",
                              description="TCP port of the metrics_exporter's /metrics"),
        DeclareLaunchArgument("rack_view", default_value="true", choices=["true", "false"],
                              description="Also start rack_view (RViz markers of the rack)"),
        OpaqueFunction(function=_launch_setup),
    ])
