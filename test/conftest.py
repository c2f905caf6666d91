"""Fixtures the test folders share: an isolated DDS graph per test run, the shared data
folder, and a real node_exporter. Helpers that are not fixtures live in test/helpers/."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import REPO, SHARED_DATA

from rackpower_nodes.core.telemetry import HostTarget, ScrapeError, fetch

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


@pytest.fixture(scope="session")
def ros_env(tmp_path_factory) -> dict[str, str]:
    """Environment for processes of one DDS graph: own domain id, localhost discovery only.

    Subprocesses get PYTHONPATH pointing at this checkout, so the executables installed by
    `make setup` run the code under test.
    """
    from rackpower_nodes.tools.launch_env import isolated_ros_env

    env = isolated_ros_env(tmp_path_factory.mktemp("ros_log"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it lies beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def node_exporter():
    """A real node_exporter on a free loopback port; yields its HostTarget."""
    if not os.path.exists(NODE_EXPORTER):
        pytest.skip(f"{NODE_EXPORTER} is absent (apt-get install prometheus-node-exporter)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = HostTarget("real", f"http://127.0.0.1:{port}/metrics", timeout_s=5.0)
    try:
        _wait_until_answers(proc, target)
        yield target
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


def _wait_until_answers(proc: subprocess.Popen, target: HostTarget) -> None:
    deadline = time.monotonic() + 15.0
    while True:
        try:
            fetch(target)
            return
        except ScrapeError:
            if proc.poll() is not None:
                pytest.fail(f"node_exporter exited: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("node_exporter did not answer within 15 s")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def ros2():
    """Skips a test that drives the graph with the upstream `ros2` CLI where it is absent."""
    from rackpower_nodes.tools.launch_env import ros2_command

    if ros2_command() is None:
        pytest.skip("ros2 launch is not installed (launch_ros, ros2cli): `make setup` installs "
                    "them from ../shared/ros2-tools when that folder is present")
