"""`make demo`: the rack simulator and the whole node graph, each as its own process, over DDS.

`rackpower-sim live` plays the rack: a sensor board on a pty (64 channels at 1 kHz, 16 of them
carrying the simulated components, a little line noise injected), one node_exporter endpoint
per simulated host, two Modbus TCP PDUs that throttle each outlet to its allocation, and a
Redfish endpoint playing the twelve servers' BMCs, whose power limits cap the servers too.
`current_sensor` reads the board, `host_telemetry` scrapes the endpoints, `predictor` forecasts
the next 5 s with the served forecaster (persistence, EWMA, LightGBM and a small LSTM, each
component class served the one that has earned it; trained on two simulated hours the first
time the demo runs, then reused from build/demo-model), and `pdu_actuator` allocates the rack
budget from the forecasts and writes it to the PDUs and the BMCs. `recorder` writes every topic
into rosbag2 (MCAP) bags, rotated every 10 s, beside a bag of 15 simulated minutes of history,
and `retrain_scheduler`, whose off-peak rule is shortened to "the rack has been below its
budget for 30 s", trains a served challenger on those bags during the demo and judges it
against the champion on the newest two minutes. `health_monitor` judges each component's health
from its draw; a few seconds into the watch the demo injects one fault into the simulator
through its control socket (`DEMO_FAULT`: srv05's board channel sticks) and reports when and as
what it was found. This process subscribes like any consumer and prints what arrived
(`tools/demo_report.py`), then replays the demo's own simulated span in fast mode under the
proactive, reactive and static modes and prints them side by side, and ends with a summary: per
fault injected, whether and when it was found and what the actuator did, then what went wrong,
with counts (`tools/demo_summary.py`). The processes' output passes through a digest that
prints each kind of line twice and counts the rest for that summary (`tools/demo_log.py`): no
floods.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor

from diagnostic_msgs.msg import DiagnosticArray

from rackpower.msg import (
    AllocationError, ComponentHealth, HostTelemetry, ModelUpdate, PowerAllocation,
    PowerForecast)
from rackpower_nodes.nodes.common import errors_qos, latched_qos, samples_qos
from rackpower_nodes.nodes.health_monitor import health_qos
from rackpower_nodes.drivers.bmc import RedfishPowerCap
from rackpower_nodes.drivers.pdu_link import PduLink, PduTarget
from rackpower_nodes.sim.control import send_command
from rackpower_nodes.tools.demo_log import LogDigest, pump
from rackpower_nodes.tools.demo_params import (
    SIM_BMC_PASSWORD, SIM_BMC_USER, actuator_params, health_params, recorder_params,
    retrain_params, telemetry_params)
from rackpower_nodes.tools.demo_report import (
    report_allocations, report_forecasts, report_health, report_retraining, report_samples)
from rackpower_nodes.tools.demo_summary import AllocationSeen, FaultSeen, summary
from rackpower_nodes.tools.launch_env import (
    executable, isolated_ros_env, share_file, stop_process, wait_for_path)
from rackpower_nodes.tools.monitor import SampleMonitor

NAMESPACE = "/rack_01"
_LEVELS = {b"\x00": "OK", b"\x01": "WARN", b"\x02": "ERROR", b"\x03": "STALE"}
DEMO_MODEL_ROOT = Path("build") / "demo-model"
# A short history (3 s) and one coarse resolution (1 s) so the model is ready ~4 s after start.
DEMO_TRAINING = ["--model", "served", "--hidden", "32", "--epochs", "3", "--history-steps", "30",
                 "--coarse", "10", "--stride", "10", "--max-windows", "40000", "--threads", "2",
                 "--no-progress", "--seed", "1"]
# The fault the demo injects (FaultSpec fields; it starts when it is sent) and how long into
# the watch: srv05's board channel holds its value from then on
FAULT_AFTER_S = 5.0
DEMO_FAULT = {"kind": "sensor_stuck", "component": "srv05"}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="rackpower-demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds to watch")
    parser.add_argument("--model-root", type=Path, default=DEMO_MODEL_ROOT,
                        help="where the demo's model is kept between runs")
    return parser.parse_args(argv)


def demo_model(root: Path, tmp: Path, env: dict) -> Path:
    """The newest model under `root` whose features the predictor builds (one saved with an
    older feature list stays there, unused); trains one on two simulated hours when there is
    none."""
    import json

    from rackpower_nodes.core.forecast.features import WindowSpec, feature_names

    def current(path: Path) -> bool:
        doc = json.loads((path / "model.json").read_text())
        coarse = tuple(doc.get("window_spec", {}).get("coarse", ()))
        return doc.get("feature_names") == feature_names(WindowSpec(coarse=coarse))

    models = sorted(p for p in root.glob("served-*") if (p / "model.json").is_file()
                    and current(p))
    if models:
        return models[-1]
    print("training a small forecasting model on 2 simulated hours (first run only) ...",
          flush=True)
    data = tmp / "train-sim"
    subprocess.run([str(executable("rackpower-sim")), "fast", "--hours", "2", "--seed", "11",
                    "--out", str(data)], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(executable("rackpower-train")), "--sim", str(data), "--out", str(root),
                    *DEMO_TRAINING], env=env, check=True)
    return sorted(root.glob("served-*"))[-1]


def _spin_for(executor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def _history_bag(tmp: Path) -> Path:
    """15 simulated minutes up to now, as a bag in the recorder's folder: the history a rack
    would have recorded before the demo started (the live bags add to it)."""
    import dataclasses

    from rackpower_nodes.sim.bag_export import write_bag
    from rackpower_nodes.sim.rack_sim import generate, load_config

    minutes = 15
    rack = dataclasses.replace(load_config(share_file("config", "rack_sim.yaml")),
                               start_unix=float(int(time.time()) - 60 * minutes))
    data = generate(minutes / 60, seed=8, config=rack)
    return write_bag(data, tmp / "bags" / "history-sim", NAMESPACE)


def main(argv=None) -> int:
    args = _parse(argv)
    digest = LogDigest(show=2)      # each kind of log line twice, then counted (summary)
    seen: dict = {}                 # what _watch observed, for the summary
    with tempfile.TemporaryDirectory(prefix="rackpower-demo-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**isolated_ros_env(tmp / "log"), "PYTHONUNBUFFERED": "1"}
        model = demo_model(args.model_root.resolve(), tmp, env)
        config = str(share_file("config", "rack.yaml"))
        link, manifest_path = tmp / "board", tmp / "rack.json"
        control = tmp / "control.sock"
        print(f"rackpower demo: simulated rack + current_sensor + host_telemetry + predictor "
              f"for {args.duration:g} s (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})", flush=True)
        procs: list[subprocess.Popen] = []

        def start(name: str, cmd: list[str], **extra_env) -> None:
            proc = subprocess.Popen(cmd, env={**env, **extra_env}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
            pump(digest, name, proc)
            procs.append(proc)

        # the simulator with pymodbus' and its own chatter at WARNING (demo_log.quiet_sim)
        start("rackpower-sim", [
            sys.executable, "-m", "rackpower_nodes.tools.demo_log", "live", "--link", str(link),
            "--config", str(share_file("config", "rack_sim.yaml")),
            "--exporter-base-port", "0", "--pdu-base-port", "0", "--bmc-port", "0",
            "--manifest", str(manifest_path), "--control", str(control),
            "--corrupt-prob", "0.001", "--garbage-prob", "0.0005", "--seed", "7"])
        try:
            wait_for_path(manifest_path, 30)
            manifest = json.loads(manifest_path.read_text())
            ros_args = ["--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", config]

            def node(name: str, *more: str, **extra_env) -> None:
                start(name, [str(executable(name)), *ros_args, *more], **extra_env)

            node("current_sensor", "-p", f"serial.port:={link}")
            node("host_telemetry", "--params-file", str(telemetry_params(tmp, manifest)))
            node("predictor", "-p", f"model.path:={model}", "-p",
                 f"schedule.file:={share_file('config', 'rack_sim.yaml')}")
            node("pdu_actuator", "--params-file", str(actuator_params(tmp, manifest, config)),
                 RACKPOWER_BMC_PASSWORD=SIM_BMC_PASSWORD)
            _history_bag(tmp)
            node("recorder", "--params-file", str(recorder_params(tmp)))
            node("retrain_scheduler", "--params-file", str(retrain_params(tmp, model)))
            node("health_monitor", "--params-file", str(health_params(tmp, manifest, config)),
                 RACKPOWER_BMC_PASSWORD=SIM_BMC_PASSWORD)
            code = _watch(args, procs[1:], manifest, control, seen)
            span_s = time.time() - manifest["start_unix"]
        finally:
            for proc in reversed(procs):
                stop_process(proc)
        if code == 0:
            _replay(manifest, span_s, model, config)
        if seen:
            print("\n" + summary(seen["faults"], seen["allocations"], seen["t0"], seen["end"],
                                 seen["trips_end"], frames_lost=seen["frames_lost"],
                                 corrections=seen["corrections"], exited=seen["exited"],
                                 logged=digest.repeated()), flush=True)
        return code


def _trips(control: Path) -> int:
    """The simulator's breaker trips so far (its control socket's stats)."""
    return int(send_command(control, {"cmd": "stats"}).get("breaker_trips", 0))


def _inject(control: Path) -> dict | None:
    """Send DEMO_FAULT to the simulator (it starts now); the fault as injected and when
    (None, with the simulator's answer printed, when it refused)."""
    sent = time.time()
    answer = send_command(control, {"cmd": "inject_fault", "fault": DEMO_FAULT})
    if not answer.get("ok"):
        print(f"fault injection refused: {answer.get('error')}", file=sys.stderr)
        return None
    return {"fault": answer["fault"], "t_unix": sent}


def _watch(args, nodes: list[subprocess.Popen], manifest: dict, control: Path,
           seen: dict) -> int:
    """Watch the graph, inject DEMO_FAULT, print what arrived; `seen` is filled with what
    the summary is built from (`tools/demo_summary.py`). 0 when everything arrived."""
    with rclpy.init():
        monitor = SampleMonitor(NAMESPACE)
        telemetry: list[HostTelemetry] = []
        forecasts: list[PowerForecast] = []
        allocations: list[PowerAllocation] = []
        errors: list[AllocationError] = []
        updates: list[ModelUpdate] = []
        retrain: dict[str, str] = {}
        actuator: dict[str, str] = {}
        health: dict[str, ComponentHealth] = {}
        health_levels: dict[str, str] = {}
        fault: dict = {"injected": None, "found": None}

        def on_health(msg: ComponentHealth) -> None:
            health[msg.component_id] = msg
            injected = fault["injected"]
            if (injected and fault["found"] is None and msg.state == "fault"
                    and msg.component_id == injected["fault"]["component"]):
                fault["found"] = {"msg": msg, "t_unix": time.time()}

        def on_diag(msg: DiagnosticArray) -> None:
            for st in msg.status:
                if "/health_monitor: " in st.name:
                    health_levels[st.name.rsplit(": ", 1)[-1]] = _LEVELS.get(st.level, "?")
                elif st.name.endswith(": retraining"):
                    retrain.clear()
                    retrain.update({kv.key: kv.value for kv in st.values})
                elif st.name.endswith("pdu_actuator: allocation"):
                    actuator.clear()
                    actuator.update({kv.key: kv.value for kv in st.values})

        monitor.create_subscription(ModelUpdate, "model_update", updates.append, latched_qos())
        monitor.create_subscription(ComponentHealth, "component_health", on_health,
                                    health_qos(64))
        monitor.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
        monitor.create_subscription(HostTelemetry, "host_telemetry", telemetry.append,
                                    samples_qos(2.0))
        monitor.create_subscription(PowerForecast, "power_forecast", forecasts.append, 10)
        monitor.create_subscription(PowerAllocation, "power_allocation", allocations.append,
                                    latched_qos())
        monitor.create_subscription(AllocationError, "allocation_error", errors.append,
                                    errors_qos())
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        _spin_for(executor, 3.0)      # discovery and the first batches
        monitor.reset()
        _spin_for(executor, min(FAULT_AFTER_S, args.duration))
        trips_before = _trips(control)
        fault["injected"] = _inject(control)
        _spin_for(executor, max(0.0, args.duration - FAULT_AFTER_S))
        end = time.monotonic() + 90.0      # let a retrain that started finish
        while (retrain.get("state") in ("training", "evaluating")
               and time.monotonic() < end):
            _spin_for(executor, 0.5)
        caps = _read_caps(manifest["bmcs"])     # right after the last allocation below
        dead = [p.args[0] for p in nodes if p.poll() is not None]
        seen.update(_observed(fault, trips_before, allocations, errors, manifest["start_unix"],
                              _trips(control),
                              monitor.stats.frames_lost_reported, dead))
        if dead:
            print(f"exited early: {', '.join(map(str, dead))}", file=sys.stderr)
            return 1
        report_samples(monitor, telemetry[-1] if telemetry else None)
        report_forecasts(forecasts)
        report_allocations(allocations, errors, caps, actuator)
        report_retraining(retrain, updates)
        report_health(health, fault["injected"], fault["found"], health_levels)
        # the injected fault must have been found (when the watch was long enough to inject)
        found = fault["found"] is not None or args.duration <= FAULT_AFTER_S
        ok = (monitor.stats.messages > 0 and bool(telemetry) and bool(forecasts)
              and bool(allocations) and bool(health) and found)
        executor.remove_node(monitor)
        executor.shutdown()
        monitor.destroy_node()
    return 0 if ok else 1


def _observed(fault: dict, trips_before: int, allocations: list, errors: list, t0: float,
              trips_end: int, frames_lost: int, dead: list) -> dict:
    """What the summary is built from: the fault injected and its first health report, the
    allocations received, the corrections by action, trips, lost frames, dead processes."""
    faults = []
    if fault["injected"] is not None:
        f, found = fault["injected"], fault["found"]
        m = found["msg"] if found else None
        faults.append(FaultSeen(f["fault"]["kind"], f["fault"]["component"], f["t_unix"],
                                trips_before, found["t_unix"] if found else None,
                                m.cause if m else "", bool(m.sensor_fault) if m else False))
    allocs = [AllocationSeen(a.header.stamp.sec + a.header.stamp.nanosec * 1e-9, a.mode,
                             a.mode_reason, float(sum(a.allocated_w)), a.budget_w)
              for a in allocations]
    corrections = dict(Counter(e.action for e in errors))
    return {"faults": faults, "allocations": allocs, "t0": t0, "end": time.time(),
            "trips_end": trips_end, "frames_lost": frames_lost, "corrections": corrections,
            "exited": [Path(str(d)).name for d in dead]}


def _read_caps(bmcs: dict[str, str]) -> dict[str, float]:
    """The power limit each simulated BMC holds now, read over Redfish (NaN where unread or
    none is set):
    a PDU link over the BMCs connects to them side by side and reads each limit back."""
    targets = [PduTarget(name, RedfishPowerCap(url, username=SIM_BMC_USER,
                                               password=SIM_BMC_PASSWORD, timeout_s=2.0),
                         np.array([1]), np.array([i]), kind="bmc")
               for i, (name, url) in enumerate(bmcs.items())]
    link = PduLink(targets, len(targets), math.inf, np.full(len(targets), math.inf))
    link.connect_all()
    held = link.held_w()            # what each BMC reported (inf: no limit set)
    held[np.isinf(held)] = np.nan
    link.close()
    return dict(zip(bmcs, held.tolist()))


def _replay(manifest: dict, span_s: float, model: Path, config: str) -> None:
    """The demo's own simulated span in fast mode under each mode, side by side."""
    import dataclasses

    from rackpower_nodes.core.actuator_config import load_actuator_config_yaml
    from rackpower_nodes.core.evaluation import EvalSetup, bmc_actuation, format_table
    from rackpower_nodes.tools.evaluate_cli import demand_columns, run_modes
    from rackpower_nodes.sim.rack_sim import generate, load_config

    rack = dataclasses.replace(load_config(share_file("config", "rack_sim.yaml")),
                               start_unix=float(manifest["start_unix"]))
    data = generate(max(span_s, 1.0) / 3600.0, seed=int(manifest["seed"]),
                    rate_hz=int(manifest["rate_hz"]), config=rack)
    acfg = load_actuator_config_yaml(config)
    setup = EvalSetup(acfg.components, acfg.policy, acfg.policy.lead_s, 0.1,
                      *bmc_actuation(acfg.cap_urls, acfg.power_caps.min_change_w))
    names = [c.id for c in acfg.components]
    demand = demand_columns(data, names)
    results = run_modes(("proactive", "reactive", "static"), data, demand, names, setup,
                        Path(config), model)
    print(f"\n== the demo's {span_s:.0f} s of simulated demand, replayed in fast mode under "
          "each mode ==")
    print("(the same controller, a 1 s actuation delay, the servers' BMC caps in whole watts "
          "with their dead band, and the simulated PDU; the first few "
          "seconds the forecaster warms up on the fallback; `rackpower-evaluate` does this "
          "for a whole day)\n")
    print(format_table(results, len(names)))


if __name__ == "__main__":
    sys.exit(main())
