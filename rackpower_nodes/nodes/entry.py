"""The node executables' entry points (setup.cfg `console_scripts`).

Importing this module takes SIGINT and SIGTERM over (only the executables import it); each
entry point then imports its node's module and runs that module's `main()`. A node's imports
take seconds on a loaded controller (rclpy, numpy; torch alone about 2 s in the predictor),
and a Ctrl-C in that time used to end it with a KeyboardInterrupt traceback (exit -2), which a
terminal's Ctrl-C right after `ros2 launch`, or during a respawn, easily hits. Nothing is held
before the node is built (no device written, no bag open), so such a signal ends the process
at once with exit code 0; from :func:`rackpower_nodes.nodes.main.run_node` on, signals start
the orderly shutdown instead.
"""
from __future__ import annotations

import importlib
import os
import signal


def _exit_at_once(_signum, _frame) -> None:
    os._exit(0)


def _take_signals_over() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_at_once)


_take_signals_over()          # at import: only the executables import this module


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
