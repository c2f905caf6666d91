"""rackpower_nodes.nodes.main with a small node of its own in a process of its own: the
orderly shutdown on SIGINT/SIGTERM, later signals ignored while it runs, a crash in a
callback still destroying the node. (The real graph under ros2 launch:
test_launch_shutdown.py.)"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.ros

NODE = textwrap.dedent("""
    import sys, time
    from rclpy.node import Node
    from rackpower_nodes.nodes.main import run_node

    class Probe(Node):
        def __init__(self):
            super().__init__("node_main_probe")
            self.create_timer(0.05, self.tick)
            print("up", flush=True)

        def tick(self):
            if sys.argv[1] == "crash":
                raise RuntimeError("probe callback failed")

        def destroy_node(self):
            print("destroying", flush=True)
            time.sleep(float(sys.argv[2]))       # the safe work a second Ctrl-C must not cut
            print("destroyed", flush=True)
            super().destroy_node()

    run_node(Probe, "probe", threads=int(sys.argv[3]))
""")


def _start(ros_env, mode: str, destroy_s: float, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", NODE, mode, str(destroy_s), str(threads)],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout.readline().strip() == "up"
    return proc


@pytest.mark.parametrize("threads", [1, 3])
def test_signals_during_the_shutdown_are_ignored_until_it_is_done(ros_env, threads):
    proc = _start(ros_env, "run", 1.0, threads)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip().endswith("shutting down (SIGINT)")
    assert proc.stdout.readline().strip() == "destroying"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc.send_signal(sig)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.startswith("destroyed") and "Traceback" not in out, out
    assert "ignored SIGINT, SIGTERM, SIGINT while shutting down" in out, out


def test_sigterm_shuts_down_in_order_too(ros_env):
    proc = _start(ros_env, "run", 0.0, 1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "shutting down (SIGTERM)" in out and "destroyed" in out, out


def test_a_crash_in_a_callback_destroys_the_node_then_exits_1(ros_env):
    proc = _start(ros_env, "crash", 0.0, 1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert out.index("destroyed") < out.index("Traceback"), out
    assert "RuntimeError: probe callback failed" in out
