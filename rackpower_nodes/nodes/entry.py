"""The node executables' entry points (setup.cfg `console_scripts`).

Importing this module takes SIGINT and SIGTERM over (only the executables import it); each
entry point then imports its node's module and runs that module's `main()`. A node's imports
take seconds on a loaded controller (rclpy, numpy; torch alone about 2 s in the predictor),
and a Ctrl-C in that time used to end it with a KeyboardInterrupt traceback (exit -2), which a
terminal's Ctrl-C right after `ros2 launch`, or during a respawn, easily hits. Nothing is held
before the node is built (no device written, no bag open), so such a signal ends the process
at once with exit code 0; from :func:`rackpower_nodes.nodes.main.run_node` on, signals start
the orderly shutdown instead.

It also keeps ROS's message code generator out of the node processes: every generated message
module imports `rosidl_generator_py` for its `import_type_support`, and that package's
`__init__` also imports its IDL-to-Python generator (`generate_py_impl`: rosidl_parser with
lark, rosidl_pycommon with empy), which a running node never calls: ~6.7 MB of RSS in each
node process (measured on an rclpy node publishing two message types; eight processes in the
rack's graph). The package expects the generator may be missing (an ImportError there is
logged at debug level and only `generate_py` is left out of it), so the entry points mark that
one submodule as absent before anything imports a message.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys


def _exit_at_once(_signum, _frame) -> None:
    os._exit(0)


def _take_signals_over() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_at_once)


_take_signals_over()          # at import: only the executables import this module

#: the rosidl submodule that only generates code (see the module docstring)
IDL_GENERATOR = "rosidl_generator_py.generate_py_impl"


def _leave_out_idl_generator() -> None:
    """Mark the message code generator as absent (`import` of it raises ImportError), unless
    something in this process has already imported it."""
    sys.modules.setdefault(IDL_GENERATOR, None)


_leave_out_idl_generator()    # at import, as the signals: before any message module loads


def _run(module: str) -> int:
    return importlib.import_module(f"rackpower_nodes.nodes.{module}").main()


def current_sensor() -> int:
    return _run("current_sensor")


def host_telemetry() -> int:
    return _run("host_telemetry")


def predictor() -> int:
    return _run("predictor")


def pdu_actuator() -> int:
    return _run("pdu_actuator")


def recorder() -> int:
    return _run("recorder")


def retrain_scheduler() -> int:
    return _run("retrain_scheduler")


def health_monitor() -> int:
    return _run("health_monitor")


def rack_view() -> int:
    return _run("rack_view")


def power_coordinator() -> int:
    return _run("power_coordinator")


def metrics_exporter() -> int:
    return _run("metrics_exporter")


def rack_composed() -> int:
    return _run("composed")
