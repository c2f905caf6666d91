"""Start rackpower's executables for `make demo`, tests and benchmarks.

Finds `lib/rackpower/<executable>` through the ament index (as `ros2 run` does) and prepares
an environment for an isolated DDS graph on this machine: its own domain id, discovery kept to
localhost, logs in a scratch folder. :class:`LaunchedGraph` runs the whole graph with the real
`ros2 launch`, in a process group of its own, and interrupts it as a terminal's Ctrl-C does.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


# `ros2 launch` keeps Python's SIGINT handler (a KeyboardInterrupt that its loop catches and
# drops) beside its own signal handling; when a Ctrl-C lands while a weak reference's callback
# runs (asyncio's task set), Python can only print that interrupt, at the start of a line,
# unprefixed: launch's own output, never a process of the graph's (those lines start "[name-N]")
_LAUNCH_INTERRUPT = re.compile(
    r"^Exception ignored in: [^\n]*\nTraceback \(most recent call last\):\n"
    r"(?:  [^\n]*\n)*KeyboardInterrupt: ?\n", re.MULTILINE)


def without_launch_interrupts(output: str) -> tuple[str, int]:
    """`output` of `ros2 launch` without the interrupts launch itself printed as ignored (see
    _LAUNCH_INTERRUPT), and how many there were: what is left holds the graph's tracebacks."""
    return _LAUNCH_INTERRUPT.subn("", output)


# the per-process prefix `ros2 launch` gives a process's lines, and a thread's header in the
# stack report nodes/main.py prints through faulthandler when a shutdown overruns
_PROCESS_LINE = re.compile(r"^\[(?P<proc>[\w.-]+-\d+)\] (?P<text>.*)$")
_THREAD_HEADER = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):")
_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line \d+ in (?P<func>\S+)')
# where a node's own stop hands over to rclpy's: a node's destroy_node, or the marker that
# nodes.main puts before rclpy's while the shutdown is bounded (its test ties the two)
HANDOVER_FRAMES = ("destroy_node", "destroy_entities")


def dds_teardown_hangs(output: str) -> dict[str, str]:
    """The processes of `output` (launch names, 'host_telemetry-3') whose shutdown report
    shows their main thread stuck inside rclpy while the node's own destroy_node() had handed
    over to rclpy's (its publishers', subscriptions' and timers' DDS entities being
    destroyed; through nodes.main's `destroy_entities` since the shutdown is bounded), each
    with that innermost rclpy frame: the node had done its own stopping, and what hung is the
    ROS client library's teardown (seen twice under two CPU burners, rmw_fastrtps with
    rclpy's events executor), which the node's shutdown deadline ends with exit 0, or
    `ros2 launch` by SIGTERM or SIGKILL. A stack stuck anywhere else is not listed."""
    threads: dict[str, list[list[tuple[str, str]]]] = {}
    for line in output.splitlines():
        m = _PROCESS_LINE.match(line)
        if m is None:
            continue
        proc, text = m["proc"], m["text"]
        if _THREAD_HEADER.match(text):
            threads.setdefault(proc, []).append([])
        elif (frame := _FRAME.match(text)) and threads.get(proc):
            threads[proc][-1].append((frame["path"], frame["func"]))
    hangs = {}
    for proc, stacks in threads.items():
        for frames in stacks:
            if not (frames and "/rclpy/" in frames[0][0]
                    and any(p.endswith("rackpower_nodes/nodes/main.py") for p, _ in frames)):
                continue
            inner = next(i for i, (p, _) in enumerate(frames) if "/rclpy/" not in p)
            if frames[inner][1] in HANDOVER_FRAMES:
                hangs[proc] = f"{frames[0][0]} in {frames[0][1]}"
    return hangs


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


# -- the whole graph under `ros2 launch` ------------------------------------------------------

LAUNCH_STARTED = re.compile(r"\[INFO\] \[(?P<proc>[\w.-]+)\]: process started with pid "
                            r"\[(?P<pid>\d+)\]")
# Python < 3.13: launch's asyncio child watcher and its own send_signal() both call
# waitpid(); when a process exits just as launch signals it, the code is lost and reported as
# 255 (CPython gh-87744, fixed in 3.13) after this warning
LAUNCH_CODE_LOST = re.compile(r"Unknown child process pid (?P<pid>\d+), will report "
                              r"returncode 255")
# launch's shutdown timers: 5 s after its SIGINT, 15 s after (SIGKILL)
LAUNCH_ESCALATED = re.compile(r"\[ERROR\] \[(?P<proc>[\w.-]+)\]: process\[[\w.-]+\] failed to "
                              r"terminate")
LAUNCH_EXITED = re.compile(r"\[(?:INFO|ERROR)\] \[(?P<proc>[\w.-]+)\]: process has "
                           r"(?P<how>finished cleanly|died) \[pid (?P<pid>\d+)"
                           r"(?:, exit code (?P<code>-?\d+))?")


def wait_while_running(proc: subprocess.Popen, name: str, condition, timeout_s: float,
                       what, output) -> None:
    """Until `condition()` holds while `proc` (`name`) runs; AssertionError naming `what`
    (a string, or a callable giving one when it fails: what was still missing) with the
    tail of `output()` after `timeout_s`, or when `proc` exits first."""
    deadline = time.monotonic() + timeout_s
    said = what if callable(what) else lambda: what
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited ({proc.returncode}) before {said()}:\n"
                                 f"{output()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {said()} within {timeout_s:g} s:\n{output()[-4000:]}")
        time.sleep(0.1)


def ros2_command() -> Path | None:
    """The `ros2` command beside this interpreter, when ros2cli and launch_ros are installed
    (`make setup` installs them from ../shared/ros2-tools where that folder exists)."""
    path = Path(sys.prefix) / "bin" / "ros2"
    try:
        import launch_ros  # noqa: F401
    except ImportError:
        return None
    return path if os.access(path, os.X_OK) else None


@dataclass
class ProcessRun:
    """One process `ros2 launch` started: its launch name (`recorder-6`), pid, exit code
    (None while running), when its exit was reported (time.monotonic(), s), and whether
    launch lost the real exit code (`LAUNCH_CODE_LOST`: it then reports 255)."""

    name: str
    pid: int
    code: int | None = None
    exited_at: float | None = None
    code_lost: bool = False


class LaunchedGraph:
    """`ros2 launch <args>` in a process group of its own, as a terminal runs it: its output
    is kept line by line with the time it arrived (and copied to `log_path`), the processes
    it starts and their exit codes are parsed from it, and :meth:`interrupt` sends SIGINT to
    the whole group, as Ctrl-C in a terminal does."""

    def __init__(self, launch_args: list[str], env: dict[str, str], log_path: Path):
        ros2 = ros2_command()
        if ros2 is None:
            raise RuntimeError("ros2 launch is not installed: `make setup` installs it from "
                               "../shared/ros2-tools when that folder exists")
        self.lines: list[tuple[float, str]] = []
        self.runs: list[ProcessRun] = []
        self.interrupted_at: list[float] = []
        # launch's escalations (SIGTERM, SIGKILL) of processes still running, and those of
        # processes it had already reported ended (its timers then fire for nothing)
        self.escalations: list[str] = []
        self.escalations_after_exit: list[str] = []
        self.hung: str | None = None      # why launch was killed after its processes ended
        self._code_lost: set[int] = set()
        self._log = log_path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([str(ros2), "launch", *launch_args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name="launch-output")
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            line = line.rstrip("\n")
            with self._lock:
                self.lines.append((now, line))
                self._log.write(line + "\n")
                self._log.flush()
                if m := LAUNCH_STARTED.search(line):
                    self.runs.append(ProcessRun(m["proc"], int(m["pid"])))
                elif m := LAUNCH_EXITED.search(line):
                    for run in self.runs:
                        if run.pid == int(m["pid"]):
                            run.code, run.exited_at = int(m["code"] or 0), now
                elif m := LAUNCH_ESCALATED.search(line):
                    mine = [r for r in self.runs if r.name == m["proc"]]
                    ended = bool(mine) and mine[-1].exited_at is not None
                    (self.escalations_after_exit if ended else self.escalations).append(line)
                elif m := LAUNCH_CODE_LOST.search(line):
                    self._code_lost.add(int(m["pid"]))
                    for run in self.runs:
                        run.code_lost = run.pid in self._code_lost

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines)

    def started(self, executable: str) -> list[ProcessRun]:
        """Every run of `executable` so far, respawns included."""
        with self._lock:
            return [r for r in self.runs if r.name.rsplit("-", 1)[0] == executable]

    def wait_until(self, condition, timeout_s: float, what) -> None:
        """Until `condition()` holds; AssertionError naming `what` (or what the callable
        `what` says then) and the output's tail after `timeout_s`, or when launch exits
        first."""
        wait_while_running(self.proc, "ros2 launch", condition, timeout_s, what,
                           lambda: self.output)

    def interrupt(self, group: bool = True) -> None:
        """SIGINT to the whole process group, as a terminal's Ctrl-C; with `group` False to
        `ros2 launch` alone (as `kill -INT` or a service manager does), which then sends
        each process its own SIGINT."""
        self.interrupted_at.append(time.monotonic())
        if group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)

    def wait_ended(self, timeout_s: float, hung_after_s: float = 18.0) -> int | None:
        """Until launch and every process of its group have exited; launch's exit code.

        Once every process launch started has reported its exit and nothing but launch is
        left in the group, launch is given `hung_after_s` (past its own SIGKILL timer, 15 s)
        to exit; launch 3.4 on Python 3.11 rarely never does (its shutdown timers fire for a
        process that had finished cleanly, then it waits forever): it is then killed, `hung`
        says so and None is returned. After `timeout_s` with any other process left, the
        group is killed and AssertionError raised."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None or self.group_alive():   # reap launch first
            now = time.monotonic()
            if (last := self._launch_alone_since()) is not None and now - last > hung_after_s:
                self.hung = (f"ros2 launch was still running {now - last:.1f} s after the last "
                             "of its processes had ended; killed")
                self.kill()
                return None
            if now > deadline:
                left = subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(self.proc.pid)],
                                      capture_output=True, text=True).stdout
                self.kill()
                raise AssertionError(f"still running {timeout_s:g} s after Ctrl-C:\n{left}\n"
                                     f"launch output:\n{self.output[-4000:]}")
            time.sleep(0.05)
        self._reader.join(5.0)
        return self.proc.returncode

    def _launch_alone_since(self) -> float | None:
        """When the last process launch started was reported ended, if every one was and
        launch is the only process left in its group; None otherwise."""
        with self._lock:
            if not self.runs or any(r.exited_at is None for r in self.runs):
                return None
            last = max(r.exited_at for r in self.runs)
        pids = subprocess.run(["ps", "-o", "pid=", "-g", str(self.proc.pid)],
                              capture_output=True, text=True).stdout.split()
        return last if pids == [str(self.proc.pid)] else None

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """SIGKILL to whatever is left of the group (a test's cleanup)."""
        if self.group_alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(5.0)

    def close(self) -> None:
        self.kill()
        with self._lock:
            self._log.close()
