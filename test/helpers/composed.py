"""The rack's graph in one process (`rack_composed`) against `rackpower-sim live`, started as
rack.launch.py with use_sim:=true starts the separate nodes: the simulator on its fixed
loopback ports and the board link /tmp/rackpower_<rack>_board, the parameter file and the
launch file's use_sim overrides (here a second parameter file with per-node sections), the
simulated BMCs' password. Hold /tmp/rackpower-sim.lock around it (the ports are fixed)."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import yaml

from rackpower_nodes.tools.launch_env import executable, wait_for_path, wait_while_running

SIM_PASSWORD = "rackpower"           # the simulated BMCs' password (rack.launch.py's)


def sim_overrides(rack: str, sim_config: Path, data: Path, model: str = "") -> dict:
    """The per-node overrides rack.launch.py passes with use_sim:=true and data_dir (and
    model:=`model` when given)."""
    link = f"/tmp/rackpower_{rack}_board"
    overrides = {
        "current_sensor": {"serial": {"port": link}},
        "host_telemetry": {"schedule": {"file": str(sim_config)}},
        "predictor": {"schedule": {"file": str(sim_config)},
                      **({"model": {"path": model}} if model else {})},
        "recorder": {"output": {"folder": str(data / "bags"), "prefix": rack}},
        "retrain_scheduler": {"bags": {"folder": str(data / "bags")},
                              "registry": {"root": str(data / "models")}},
        "health_monitor": {"health": {"learn_dir": str(data / "health")}},
    }
    return {f"/**/{node}": {"ros__parameters": p} for node, p in overrides.items()}


class ComposedRack:
    """The simulator and `rack_composed` for `rack`, logs in `tmp`/composed.log; `tree` is the
    checkout whose config/ is read (its code runs through the env's PYTHONPATH)."""

    def __init__(self, tree: Path, rack: str, env: dict, tmp: Path, extra: tuple = (),
                 model: str = ""):
        self.rack = rack
        self.link = f"/tmp/rackpower_{rack}_board"
        sim_config = tree / "config" / "rack_sim.yaml"
        self.data = tmp / "data" / rack
        self.params = tmp / "overrides.yaml"
        self.params.write_text(yaml.safe_dump(sim_overrides(rack, sim_config, self.data, model)))
        self.log_path = tmp / "composed.log"
        self.log = self.log_path.open("w")
        self.sim = subprocess.Popen(
            [str(executable("rackpower-sim")), "live", "--link", self.link, "--config",
             str(sim_config), "--exporter-base-port", "9101", "--pdu-base-port", "5020",
             "--bmc-port", "5080"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.proc = None
        try:
            wait_for_path(self.link, 60.0)
        except TimeoutError:
            self.close()
            raise
        self.command = [str(executable("rack_composed")), *extra, "--ros-args",
                        "-r", f"__ns:=/{rack}", "--params-file",
                        str(tree / "config" / "rack.yaml"), "--params-file", str(self.params)]
        self.proc = subprocess.Popen(self.command,
                                     env={**env, "RACKPOWER_BMC_PASSWORD": SIM_PASSWORD},
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.codes: dict[str, object] = {}

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_until(self, condition, timeout_s: float, what: str) -> None:
        """Until `condition()`; AssertionError naming `what` and the log's tail after
        `timeout_s` or when the composed process exits first."""
        wait_while_running(self.proc, "rack_composed", condition, timeout_s, what,
                           self.output)

    def pids(self) -> dict[str, int]:
        return {"rack_composed": self.proc.pid, "rack_sim": self.sim.pid}

    def interrupt(self, timeout_s: float = 60.0) -> int | None:
        """SIGINT to rack_composed; its exit code, or None when it was still running after
        `timeout_s` (then killed)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def close(self) -> None:
        """Stop whatever still runs (SIGINT, SIGKILL after 30 s); `codes` keeps the exits."""
        for name, proc in (("rack_composed", self.proc), ("rack_sim", self.sim)):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                self.codes[name] = proc.wait(30.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.codes[name] = f"killed ({proc.wait()})"
        self.log.close()
