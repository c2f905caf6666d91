"""`colcon build` on the checkout builds the ROS package (messages, code, executables, data)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_colcon_build_installs_package(tmp_path):
    colcon = Path(sys.prefix) / "bin" / "colcon"
    if not colcon.exists():
        pytest.fail(f"{colcon} missing: `make setup` installs colcon-common-extensions")
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix,
               PATH=f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}")
    install = tmp_path / "install"
    result = subprocess.run(
        [str(colcon), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(REPO),
         "--build-base", str(tmp_path / "build"), "--install-base", str(install),
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    prefix = install / "rackpower"
    assert (prefix / "share/ament_index/resource_index/packages/rackpower").is_file()
    for exe in ("current_sensor", "sensor_board_sim"):
        assert os.access(prefix / "lib/rackpower" / exe, os.X_OK), exe
    assert (prefix / "share/rackpower/launch/rack.launch.py").is_file()
    assert (prefix / "share/rackpower/config/rack.yaml").is_file()
    assert (prefix / "share/rackpower/msg/PowerSamples.msg").is_file()
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    assert (site / "rackpower/msg/_power_samples.py").is_file()
    assert (site / "rackpower_nodes/nodes/current_sensor.py").is_file()
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
