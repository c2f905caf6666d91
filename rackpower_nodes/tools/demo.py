"""`make demo`: the rack simulator and the whole node graph, each as its own process, over DDS.

`rackpower-sim live` plays the rack: a sensor board on a pty (64 channels at 1 kHz, 16 of them
carrying the simulated components, a little line noise injected), one node_exporter endpoint
per simulated host, two Modbus TCP PDUs that throttle each outlet to its allocation, and a
Redfish endpoint playing the twelve servers' BMCs, whose power limits cap the servers too.
`current_sensor` reads the board, `host_telemetry` scrapes the endpoints, `predictor` forecasts
the next 5 s with a small LSTM (trained on two simulated hours the first time the demo runs,
then reused from build/demo-model), and `pdu_actuator` allocates the rack budget from the
forecasts and writes it to the PDUs and the BMCs. `recorder` writes every topic into rosbag2
(MCAP) bags, rotated every 10 s, beside a bag of 15 simulated minutes of history, and
`retrain_scheduler`, whose off-peak rule is shortened to "the rack has been below its budget
for 30 s", trains a challenger on those bags during the demo and judges it against the
champion on the newest two minutes. `health_monitor` judges each component's health from its
draw; a few seconds into the watch the demo injects one fault into the simulator through its
control socket (`DEMO_FAULT`: srv05's board channel sticks) and reports when and as what it
was found. This process subscribes like any consumer and prints
what arrived (`tools/demo_report.py`), then replays the demo's own simulated span in fast
mode under the proactive, reactive and static modes and prints them side by side.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
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
from rackpower_nodes.tools.demo_report import (
    report_allocations, report_forecasts, report_health, report_retraining, report_samples)
from rackpower_nodes.tools.launch_env import (
    executable, isolated_ros_env, share_file, stop_process, wait_for_path)
from rackpower_nodes.tools.monitor import SampleMonitor

NAMESPACE = "/rack_01"
_LEVELS = {b"\x00": "OK", b"\x01": "WARN", b"\x02": "ERROR", b"\x03": "STALE"}
SIM_BMC_USER, SIM_BMC_PASSWORD = "admin", "rackpower"     # rackpower-sim live's defaults
DEMO_MODEL_ROOT = Path("build") / "demo-model"
# A short history (3 s) and one coarse resolution (1 s) so the model is ready ~4 s after start.
DEMO_TRAINING = ["--model", "lstm", "--hidden", "32", "--epochs", "3", "--history-steps", "30",
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

    models = sorted(p for p in root.glob("lstm-*") if (p / "model.json").is_file()
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
    return sorted(root.glob("lstm-*"))[-1]


def _spin_for(executor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def _telemetry_params(tmp: Path, manifest: dict) -> Path:
    params = {"hosts": {"names": manifest["hosts"], "urls": manifest["host_urls"]},
              "schedule": {"file": str(share_file("config", "rack_sim.yaml"))}}
    path = tmp / "telemetry.yaml"
    path.write_text(yaml.safe_dump({"/**/host_telemetry": {"ros__parameters": params}}))
    return path


def _actuator_params(tmp: Path, manifest: dict, config: str) -> Path:
    """The simulator's PDUs and BMCs as the pdu_actuator finds them (free ports, from its
    manifest), for the components `config` names."""
    pdus = manifest["pdus"]
    raw = yaml.safe_load(Path(config).read_text())
    names = raw["/**/pdu_actuator"]["ros__parameters"]["components"]["names"]
    params = {"pdus": {"names": [p["name"] for p in pdus], "urls": [p["url"] for p in pdus],
                       "maps": [p["map"] for p in pdus],
                       "unit_ids": [p["unit_id"] for p in pdus]},
              "components": {"power_cap_url": [manifest["bmcs"].get(n, "") for n in names]},
              "power_caps": {"username": SIM_BMC_USER}}
    path = tmp / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    return path


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


def _health_params(tmp: Path, manifest: dict) -> Path:
    """The simulator's PDUs (free ports, from its manifest) as health_monitor's reference
    meters; an online-learned model would go to the demo's scratch folder."""
    pdus = manifest["pdus"]
    params = {"reference": {"pdus": {"names": [p["name"] for p in pdus],
                                     "urls": [p["url"] for p in pdus],
                                     "maps": [p["map"] for p in pdus],
                                     "unit_ids": [p["unit_id"] for p in pdus]}},
              "health": {"learn_dir": str(tmp / "health")}}
    path = tmp / "health.yaml"
    path.write_text(yaml.safe_dump({"/**/health_monitor": {"ros__parameters": params}}))
    return path


def _recorder_params(tmp: Path) -> Path:
    params = {"output": {"folder": str(tmp / "bags"), "prefix": "demo"},
              "rotation": {"max_duration_s": 10.0}}
    path = tmp / "recorder.yaml"
    path.write_text(yaml.safe_dump({"/**/recorder": {"ros__parameters": params}}))
    return path


def _retrain_params(tmp: Path, model: Path) -> Path:
    """A registry with the demo model as champion; an off-peak rule a demo can reach."""
    from rackpower_nodes.core.model_registry import ModelRegistry

    registry = ModelRegistry(tmp / "registry")
    champion = tmp / "champion" / model.name
    shutil.copytree(model, champion)
    registry.register(champion, {"sim": "2 simulated hours, seed 11"}, {})
    registry.promote(model.name, "the demo's model")
    params = {"registry": {"root": str(registry.root)},
              "bags": {"folder": str(tmp / "bags")},
              # "quiet" = below 100 % of the budget for 30 s: reached during the demo
              "offpeak": {"load_threshold_frac": 1.0, "load_min_s": 30.0,
                          "min_interval_s": 25.0},
              "policy": {"check_period_s": 2.0},
              "windows": {"stride": 1},
              "training": {"hidden_size": 16, "max_epochs": 2, "max_seconds": 120.0},
              "evaluation": {"holdout_s": 120.0}}
    path = tmp / "retrain.yaml"
    path.write_text(yaml.safe_dump({"/**/retrain_scheduler": {"ros__parameters": params}}))
    return path


def main(argv=None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="rackpower-demo-") as tmp_name:
        tmp = Path(tmp_name)
        env = isolated_ros_env(tmp / "log")
        model = demo_model(args.model_root.resolve(), tmp, env)
        config = str(share_file("config", "rack.yaml"))
        link, manifest_path = tmp / "board", tmp / "rack.json"
        control = tmp / "control.sock"
        print(f"rackpower demo: simulated rack + current_sensor + host_telemetry + predictor "
              f"for {args.duration:g} s (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})", flush=True)
        procs = [subprocess.Popen(
            [str(executable("rackpower-sim")), "live", "--link", str(link),
             "--config", str(share_file("config", "rack_sim.yaml")),
             "--exporter-base-port", "0", "--pdu-base-port", "0", "--bmc-port", "0",
             "--manifest", str(manifest_path), "--control", str(control),
             "--corrupt-prob", "0.001", "--garbage-prob", "0.0005", "--seed", "7"], env=env)]
        try:
            wait_for_path(manifest_path, 30)
            manifest = json.loads(manifest_path.read_text())
            ros_args = ["--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", config]
            procs.append(subprocess.Popen(
                [str(executable("current_sensor")), *ros_args, "-p", f"serial.port:={link}"],
                env=env))
            procs.append(subprocess.Popen(
                [str(executable("host_telemetry")), *ros_args,
                 "--params-file", str(_telemetry_params(tmp, manifest))], env=env))
            procs.append(subprocess.Popen(
                [str(executable("predictor")), *ros_args, "-p", f"model.path:={model}", "-p",
                 f"schedule.file:={share_file('config', 'rack_sim.yaml')}"], env=env))
            procs.append(subprocess.Popen(
                [str(executable("pdu_actuator")), *ros_args,
                 "--params-file", str(_actuator_params(tmp, manifest, config))],
                env={**env, "RACKPOWER_BMC_PASSWORD": SIM_BMC_PASSWORD}))
            _history_bag(tmp)
            procs.append(subprocess.Popen(
                [str(executable("recorder")), *ros_args,
                 "--params-file", str(_recorder_params(tmp))], env=env))
            procs.append(subprocess.Popen(
                [str(executable("retrain_scheduler")), *ros_args,
                 "--params-file", str(_retrain_params(tmp, model))], env=env))
            procs.append(subprocess.Popen(
                [str(executable("health_monitor")), *ros_args,
                 "--params-file", str(_health_params(tmp, manifest))], env=env))
            code = _watch(args, procs[1:], manifest, control)
            span_s = time.time() - manifest["start_unix"]
        finally:
            for proc in reversed(procs):
                stop_process(proc)
        if code == 0:
            _replay(manifest, span_s, model, config)
        return code


def _inject(control: Path) -> dict | None:
    """Send DEMO_FAULT to the simulator (it starts now); the fault as injected and when
    (None, with the simulator's answer printed, when it refused)."""
    sent = time.time()
    answer = send_command(control, {"cmd": "inject_fault", "fault": DEMO_FAULT})
    if not answer.get("ok"):
        print(f"fault injection refused: {answer.get('error')}", file=sys.stderr)
        return None
    return {"fault": answer["fault"], "t_unix": sent}


def _watch(args, nodes: list[subprocess.Popen], manifest: dict, control: Path) -> int:
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
        fault["injected"] = _inject(control)
        _spin_for(executor, max(0.0, args.duration - FAULT_AFTER_S))
        end = time.monotonic() + 90.0      # let a retrain that started finish
        while (retrain.get("state") in ("training", "evaluating")
               and time.monotonic() < end):
            _spin_for(executor, 0.5)
        caps = _read_caps(manifest["bmcs"])     # right after the last allocation below
        dead = [p.args[0] for p in nodes if p.poll() is not None]
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
