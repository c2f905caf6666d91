"""Start rackpower's executables outside `ros2 launch`: for `make demo`, tests and benchmarks.

Finds `lib/rackpower/<executable>` through the ament index (as `ros2 run` does) and prepares
an environment for an isolated DDS graph on this machine: its own domain id, discovery kept to
localhost, logs in a scratch folder.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


def ament_prefix() -> Path:
    """The install prefix that holds rackpower (the venv after `make setup`)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    try:
        return Path(get_package_prefix("rackpower"))
    except PackageNotFoundError as exc:
        raise RuntimeError(
            "rackpower is not installed in the ament index (AMENT_PREFIX_PATH="
            f"{os.environ['AMENT_PREFIX_PATH']}); run `make setup`") from exc


def executable(name: str) -> Path:
    """Path of `lib/rackpower/<name>`, as `ros2 run rackpower <name>` resolves it."""
    path = ament_prefix() / "lib" / "rackpower" / name
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no executable {path}; run `make setup`")
    return path


def share_file(*parts: str) -> Path:
    return ament_prefix() / "share" / "rackpower" / Path(*parts)


def isolated_ros_env(log_dir: str | os.PathLike, domain_id: int | None = None) -> dict[str, str]:
    """os.environ plus an own DDS domain limited to localhost; applied to this process too."""
    if domain_id is None:
        domain_id = random.Random(os.getpid() ^ time.time_ns()).randint(1, 100)
    env = {
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(log_dir),
        "AMENT_PREFIX_PATH": os.environ.get("AMENT_PREFIX_PATH", sys.prefix),
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    return dict(os.environ)


def stop_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> int:
    """SIGINT, then SIGKILL after `timeout_s`; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for_path(path: str | os.PathLike, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.02)
