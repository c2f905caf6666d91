"""Benchmark: a chaos soak of the whole graph against the rack simulator.

The simulator (`rackpower-sim live --control`) and the six nodes run as separate processes in
an isolated DDS domain, started from their installed executables (`lib/rackpower/<node>`) with
config/rack.yaml and the demo's overrides (`rackpower_nodes.tools.demo`), so single nodes can be
killed and restarted. For `--minutes` a seeded script injects, one at a time, every few
seconds, in shuffled rounds that cover every kind:

- each node killed with SIGKILL and with SIGINT, restarted after launch's respawn_delay
  (launch/rack.launch.py: 2 s, retrain_scheduler 5 s);
- a PDU rebooted (allocation registers back to their power-on defaults, which sum far above
  the breaker); one BMC and all BMCs rebooted (limits back to none, sessions gone);
- a foreign Modbus write (pymodbus as another client: one component's outlet to 2300 W) and
  a foreign Redfish PATCH of one server's limit (plain HTTP with Basic credentials, as curl
  would send it);
- 4 kB of garbage on the sensor-board link, a 3 s board stall, a 2 s cable pull.

A checker (`chaos_checks.DeviceChecker`) reads the devices themselves every 0.1 s. The table
reports the time the device-held sum (per component min(outlet register, BMC limit)) was above
the budget and the longest such window, the breaker trips (the simulator's PduModel), each
fault's time to detection (the graph's own signal: the actuator in safe mode, its per-device
counters of foreign values and reboots in /diagnostics, the sensor's discarded bytes, a
process exit as launch's respawn sees it; or the device read back corrected) and to
correction (the device back at rackpower's values, the mode back, the output back), and what
the bags lost around each recorder kill (gaps in power_samples not explained by the sensor's
outages). It exits 1 when a Done-when criterion of issue 11 fails.

Usage: .venv/bin/python benchmarks/bench_chaos.py [--minutes 10] [--seed 1] [--out FILE]
       [--gap-s 10] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO))        # this checkout's rackpower_nodes, as the nodes get it

import chaos_checks as cc  # noqa: E402 - after the path
import chaos_faults as cf  # noqa: E402
import chaos_report  # noqa: E402
from rackpower_nodes.tools import demo  # noqa: E402
from rackpower_nodes.tools.launch_env import (  # noqa: E402
    executable, isolated_ros_env, stop_process, wait_for_path)
from rackpower_nodes.sim.control import send_command  # noqa: E402

NODES = ("current_sensor", "host_telemetry", "predictor", "pdu_actuator", "recorder",
         "retrain_scheduler")
RESPAWN_S = dict.fromkeys(NODES, 2.0) | {"retrain_scheduler": 5.0}   # rack.launch.py
CONFIG, SIM_CONFIG = REPO / "config" / "rack.yaml", REPO / "config" / "rack_sim.yaml"
SIGINT_WAIT_S = 5.0             # then SIGKILL, as launch escalates


def _parse(argv):
    p = argparse.ArgumentParser(prog="bench_chaos", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault script")
    p.add_argument("--gap-s", type=float, default=5.0,
                   help="mean seconds from the graph's recovery to the next fault")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep logs, bags and the event record in this folder")
    p.add_argument("--model-root", type=Path, default=REPO / demo.DEMO_MODEL_ROOT,
                   help="the demo's model folder (trained there when missing)")
    return p.parse_args(argv)


class Graph:
    """The simulator and the six nodes as processes; kill one, and it comes back after its
    respawn delay, as under `ros2 launch` with respawn=True."""

    def __init__(self, work: Path, env: dict, commands: dict[str, list[str]],
                 node_env: dict[str, dict]):
        self.work, self.env, self.commands, self.node_env = work, env, commands, node_env
        self.procs: dict[str, subprocess.Popen] = {}
        self.kills: list[dict] = []
        self.starts: dict[str, list[float]] = {n: [] for n in commands}
        self._lock = threading.Lock()
        self._closing = False
        self._timers: list[threading.Timer] = []
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str) -> None:
        with self._lock:
            if self._closing:
                return
            log = open(self.work / "logs" / f"{name}.log", "ab")   # noqa: SIM115 - child's
            with log:
                self.procs[name] = subprocess.Popen(
                    self.commands[name], env=self.node_env.get(name, self.env), stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
            self.starts[name].append(time.monotonic())

    def kill(self, name: str, sig: int) -> dict:
        """Send `sig`; wait for the exit (SIGKILL after SIGINT_WAIT_S); respawn later."""
        proc = self.procs[name]
        event = {"node": name, "signal": signal.Signals(sig).name, "t": time.monotonic(),
                 "wall": time.time(), "forced": False}
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(SIGINT_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            event["forced"] = True
        event["exit_t"], event["code"] = time.monotonic(), proc.returncode
        event["restart_t"] = event["exit_t"] + RESPAWN_S[name]
        self.kills.append(event)
        timer = threading.Timer(RESPAWN_S[name], self.start, args=(name,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return event

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop_all(self) -> dict[str, int | None]:
        """Stop every process (nodes first, the simulator last); returns exit codes."""
        with self._lock:
            self._closing = True
        for timer in self._timers:
            timer.cancel()
        codes = {}
        for name in reversed(list(self.procs)):
            codes[name] = stop_process(self.procs[name], SIGINT_WAIT_S)
        return codes


def _commands(work: Path, manifest: dict, model: Path, control: Path) -> dict[str, list[str]]:
    config = str(CONFIG)
    ros = ["--ros-args", "-r", f"__ns:={demo.NAMESPACE}", "--params-file", config]
    rec = demo._recorder_params(work)
    return {
        "current_sensor": [str(executable("current_sensor")), *ros,
                           "-p", f"serial.port:={manifest['board_link']}"],
        "host_telemetry": [str(executable("host_telemetry")), *ros,
                           "--params-file", str(demo._telemetry_params(work, manifest))],
        "predictor": [str(executable("predictor")), *ros, "-p", f"model.path:={model}",
                      "-p", f"schedule.file:={SIM_CONFIG}"],
        "pdu_actuator": [str(executable("pdu_actuator")), *ros, "--params-file",
                         str(demo._actuator_params(work, manifest, config))],
        "recorder": [str(executable("recorder")), *ros, "--params-file", str(rec),
                     "-p", "output.prefix:=chaos", "-p", "rotation.max_duration_s:=60.0"],
        "retrain_scheduler": [str(executable("retrain_scheduler")), *ros, "--params-file",
                              str(demo._retrain_params(work, model)),
                              "-p", "offpeak.min_interval_s:=240.0"],
    }


def _start_sim(work: Path, env: dict, seed: int) -> tuple[subprocess.Popen, dict, Path]:
    manifest_path, control = work / "rack.json", work / "control.sock"
    log = open(work / "logs" / "sim.log", "ab")       # noqa: SIM115 - the child keeps it
    with log:
        proc = subprocess.Popen(
            [str(executable("rackpower-sim")), "live", "--link", str(work / "board"),
             "--config", str(SIM_CONFIG),
             "--exporter-base-port", "0", "--pdu-base-port", "0", "--bmc-port", "0",
             "--manifest", str(manifest_path), "--control", str(control),
             "--seed", str(seed)], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for_path(manifest_path, 60)
        wait_for_path(control, 10)
        return proc, json.loads(manifest_path.read_text()), control
    except BaseException:
        stop_process(proc)
        raise


def _spin_in_thread(watcher: cc.GraphWatcher):
    """A ROS node for `watcher`, spun in a thread; returns the function that stops it. rclpy
    installs no signal handlers: Ctrl-C reaches the soak, which stops everything in order."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("chaos_watcher")
    watcher.attach(node, demo.NAMESPACE)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, name="ros-spin", daemon=True)
    thread.start()

    def stop() -> None:
        executor.shutdown()
        thread.join(5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return stop


def _wait_ready(watcher: cc.GraphWatcher, graph: Graph, timeout_s: float) -> None:
    """Until the actuator allocates in proactive mode from the model's forecasts."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        dead = [n for n in NODES if not graph.running(n)]
        if dead:
            raise RuntimeError(f"exited during start-up: {', '.join(dead)} (logs in "
                               f"{graph.work / 'logs'})")
        recent = [a for a in watcher.allocations[-5:] if a[1] == "proactive" and a[3]]
        if len(recent) == 5 and watcher.forecasts and watcher.telemetry:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the graph was not allocating in proactive mode within {timeout_s} s "
                       f"(logs in {graph.work / 'logs'})")


def main(argv=None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="rackpower-chaos-") as tmp_name:
        work = (args.keep or Path(tmp_name)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        (work / "logs").mkdir(exist_ok=True)
        env = isolated_ros_env(work / "ros-log")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                          env.get("PYTHONPATH", "")]))
        model = demo.demo_model(args.model_root.resolve(), work, env)
        return _soak(args, work, env, model)


def _interrupt(*_) -> None:
    """SIGTERM ends the soak like Ctrl-C: every process started is stopped."""
    raise KeyboardInterrupt


def _soak(args, work: Path, env: dict, model: Path) -> int:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    sim = graph = checker = stop_ros = None
    watcher = cc.GraphWatcher()
    try:
        sim, manifest, control = _start_sim(work, env, args.seed)
        commands = _commands(work, manifest, model, control)
        actuator_env = {**env, "RACKPOWER_BMC_PASSWORD": demo.SIM_BMC_PASSWORD}
        graph = Graph(work, env, commands, {"pdu_actuator": actuator_env})
        cfg = yaml.safe_load(CONFIG.read_text())[
            "/**/pdu_actuator"]["ros__parameters"]
        comps = cfg["components"]
        outlets = list(zip(comps["pdu"], comps["outlet"]))
        stop_ros = _spin_in_thread(watcher)
        for name in NODES:
            graph.start(name)
        print(f"chaos soak: simulator + {len(NODES)} nodes (ROS_DOMAIN_ID="
              f"{env['ROS_DOMAIN_ID']}, work {work}); waiting for proactive allocation ...",
              flush=True)
        _wait_ready(watcher, graph, 180.0)
        checker = cc.DeviceChecker(manifest, comps["names"], outlets, demo.SIM_BMC_USER,
                                   demo.SIM_BMC_PASSWORD).start()
        script = cf.FaultScript(random.Random(args.seed), graph, control, manifest,
                                comps["names"], outlets, NODES)
        t_begin = time.monotonic()
        script.run(args.minutes * 60.0, args.gap_s, watcher)
        script.settle(watcher, 90.0)      # the last fault's correction
        time.sleep(2.0)
        t_end = time.monotonic()
        alive = {n: graph.running(n) for n in NODES}
        stats = send_command(control, {"cmd": "stats"})
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if checker is not None:
            checker.stop()
        codes = graph.stop_all() if graph is not None else {}
        if sim is not None:
            codes["rackpower-sim"] = stop_process(sim, SIGINT_WAIT_S)
        if stop_ros is not None:
            stop_ros()
    result = chaos_report.evaluate(script, graph, watcher, checker, work / "bags", cfg,
                                   stats, alive, codes, t_begin, t_end)
    table, ok = chaos_report.report(result, args)
    print(table, flush=True)
    if args.out is not None:
        args.out.write_text(table + "\n")
    if args.keep is not None:
        keep = {"events": result["events"], "bags": result["bags"],
                "windows": [vars(w) for w in result["windows"]],
                "samples_seen": watcher.samples, "allocations": watcher.allocations,
                "kills": graph.kills, "t0": script.t0}
        (work / "events.json").write_text(json.dumps(keep, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
