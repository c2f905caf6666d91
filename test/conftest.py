"""Shared fixtures: an isolated DDS graph per test run, and the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def ros_env(tmp_path_factory) -> dict[str, str]:
    """Environment for processes of one DDS graph: own domain id, localhost discovery only.

    Subprocesses get PYTHONPATH pointing at this checkout, so the executables installed by
    `make setup` run the code under test.
    """
    from rackpower_nodes.launch_env import isolated_ros_env

    env = isolated_ros_env(tmp_path_factory.mktemp("ros_log"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it lies beside the checkout)")
    return SHARED_DATA
