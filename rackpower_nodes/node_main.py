"""The `main()` every rackpower node executable shares.

Initialises rclpy, builds the node (a configuration error ends the process with exit code 2 and
a message naming the key), spins it until Ctrl-C or shutdown, and always destroys it, so ports
and sockets are released on every way out.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import (
    ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor)
from rclpy.node import Node

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.ros_params import ParameterError

EXIT_BAD_CONFIG = 2


def run_node(factory: Callable[[], Node], name: str, args=None, threads: int = 1) -> int:
    """Run the node made by `factory`; `threads` > 1 uses a MultiThreadedExecutor."""
    with rclpy.init(args=args):
        try:
            node = factory()
        except (ConfigError, ParameterError) as exc:
            print(f"{name}: invalid configuration: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                    else SingleThreadedExecutor())
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown(timeout_sec=2.0)   # let callbacks in flight finish first
            node.destroy_node()
    return 0
