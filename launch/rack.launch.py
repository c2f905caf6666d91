"""Launch rackpower's node graph for one rack, each node in its own process.

    ros2 launch rackpower rack.launch.py rack:=rack_07 serial_port:=/dev/ttyACM0
    ros2 launch rackpower rack.launch.py use_sim:=true            # against the built-in simulator

Arguments:
    rack         namespace of every topic and node (/<rack>/power_samples, ...)
    config       parameter YAML (one `/**/<node>: ros__parameters:` section per node)
    serial_port  the sensor board's device or pyserial URL; empty keeps the config's serial.port
    use_sim      start the sensor-board emulator on a pty and read it instead of hardware
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare

SIM_BOARD_LINK = "/tmp/rackpower_{rack}_board"


def _launch_setup(context):
    rack = LaunchConfiguration("rack").perform(context).strip("/")
    config = LaunchConfiguration("config").perform(context)
    serial_port = LaunchConfiguration("serial_port").perform(context)
    use_sim = LaunchConfiguration("use_sim").perform(context).lower() in ("true", "1", "yes")

    actions = []
    if use_sim:
        serial_port = serial_port or SIM_BOARD_LINK.format(rack=rack)
        board_sim = PathJoinSubstitution(
            [FindPackagePrefix("rackpower"), "lib", "rackpower", "sensor_board_sim"])
        actions.append(ExecuteProcess(
            cmd=[board_sim, "--link", serial_port, "--channels", "64", "--rate", "1000",
                 "--scale", "0.001", "--waveform", "sine"],
            name="sensor_board_sim", output="screen"))

    overrides = {"serial.port": serial_port} if serial_port else {}
    actions.append(Node(
        package="rackpower", executable="current_sensor", name="current_sensor",
        namespace=rack, parameters=[config, overrides], output="screen",
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
        DeclareLaunchArgument("use_sim", default_value="false", choices=["true", "false"],
                              description="Run the sensor-board emulator instead of hardware"),
        OpaqueFunction(function=_launch_setup),
    ])
