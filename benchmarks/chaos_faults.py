"""The fault script of `bench_chaos.py` and the judgement of each fault afterwards.

`FaultScript` injects one fault at a time, in shuffled rounds that cover every kind. `evaluate`
finds for each fault, from what `chaos_checks` recorded, when the graph detected it and when
the devices (or the graph's output) were right again, and reads the bags.
"""
from __future__ import annotations

import base64
import json
import math
import random
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymodbus.client import ModbusTcpClient

import chaos_checks as cc
from rackpower_nodes.core.pdu_map import load_register_map
from rackpower_nodes.sim.control import send_command

FOREIGN_OUTLET_W = 2300.0       # the example: one outlet raised from 230 W to 2300 W
FOREIGN_LIMIT_W = 555.0         # a BMC limit within every server's range, unlike rackpower's
STALL_S, PULL_S, GARBAGE_BYTES = 3.0, 2.0, 4096
DETECT_WITHIN_S, CORRECT_WITHIN_S = 30.0, 90.0
GAP_MIN_S = 0.25                # a hole in power_samples longer than this (batches: 50 ms)
LATENCY_S = 0.1                 # a batch reaches the recorder this long after its end, about
NAMESPACE = "/rack_01"


@dataclass
class Fault:
    family: str                 # kill, reboot_pdu, reboot_bmc, foreign_modbus, ...
    target: str                 # node, PDU, chassis ('all'), component, or ''
    t: float                    # monotonic s just before the injection
    t_done: float = 0.0         # monotonic s once injected (the command answered)
    wall: float = 0.0           # Unix s at t
    info: dict = field(default_factory=dict)
    detected: float | None = None
    corrected: float | None = None
    how: str = ""

    @property
    def label(self) -> str:
        if self.family == "kill":
            return f"kill {self.target} {self.info['signal']}"
        if self.family == "reboot_bmc":
            return "reboot all BMCs" if self.target == "all" else "reboot one BMC"
        return {"reboot_pdu": "reboot a PDU", "foreign_modbus": "foreign Modbus write",
                "foreign_redfish": "foreign Redfish PATCH", "garbage": "garbage on the link",
                "board_stall": f"board stall {STALL_S:g} s",
                "cable_pull": f"cable pull {PULL_S:g} s"}[self.family]


class FaultScript:
    """Seeded faults against a running graph (see bench_chaos's docstring for the kinds)."""

    def __init__(self, rng: random.Random, graph, control: Path, manifest: dict,
                 names: list[str], outlets: list[tuple[str, int]], nodes: tuple[str, ...]):
        self.rng, self.graph, self.control = rng, graph, control
        self.manifest, self.names, self.outlets, self.nodes = manifest, names, outlets, nodes
        self.pdus = {p["name"]: p for p in manifest["pdus"]}
        self.faults: list[Fault] = []
        self.t0 = time.monotonic()

    def kinds(self) -> list[tuple[str, str]]:
        out = [("kill", f"{n}:{s}") for n in self.nodes for s in ("SIGKILL", "SIGINT")]
        return out + [("reboot_pdu", ""), ("reboot_bmc", "one"), ("reboot_bmc", "all"),
                      ("foreign_modbus", ""), ("foreign_redfish", ""), ("garbage", ""),
                      ("board_stall", ""), ("cable_pull", "")]

    def settle(self, watcher, timeout_s: float = 60.0) -> bool:
        """Wait until the graph has recovered from the last fault: every node up (its output
        seen since its latest start), the actuator writing proactive allocations (False after
        `timeout_s`)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            now = time.monotonic()
            recent = [a for a in watcher.allocations[-3:] if now - a[0] < 1.0]
            if (all(self._up(n, watcher) for n in self.nodes) and len(recent) == 3
                    and all(a[1] == "proactive" and a[3] for a in recent)):
                return True
            time.sleep(0.1)
        return False

    def _up(self, node: str, w) -> bool:
        """The node runs and has published since its latest start."""
        if not self.graph.running(node):
            return False
        since = self.graph.starts[node][-1]
        seen = {"current_sensor": [s[0] for s in w.samples[-1:]],
                "host_telemetry": w.telemetry[-1:], "predictor": w.forecasts[-1:],
                "pdu_actuator": [a[0] for a in w.allocations[-1:]],
                "recorder": [e[0] for e in w.statuses("recorder: recorder")[-1:]],
                "retrain_scheduler": [e[0] for e in
                                      w.statuses("retrain_scheduler: retraining")[-1:]]}[node]
        return bool(seen) and seen[-1] > since

    def run(self, seconds: float, gap_s: float, watcher) -> None:
        kinds = self.kinds()
        mean_gap = gap_s
        self.t0 = start = time.monotonic()
        next_t, order = start + mean_gap, []
        print(f"{len(kinds)} kinds of fault, one at a time, each ~{mean_gap:.1f} s after the "
              f"graph recovered from the last, for {seconds:.0f} s", flush=True)
        while next_t < start + seconds:
            time.sleep(max(0.0, next_t - time.monotonic()))
            if not self.settle(watcher):
                print("the graph had not recovered within 60 s; injecting anyway", flush=True)
            if time.monotonic() >= start + seconds:
                break
            if not order:
                order = kinds[:]
                self.rng.shuffle(order)
            fault = self.inject(*order.pop())
            print(f"[{fault.t - start:6.1f} s] {fault.label} {fault.target} "
                  f"{json.dumps(fault.info, default=str)}", flush=True)
            next_t = time.monotonic() + self.rng.uniform(0.6, 1.4) * mean_gap

    def inject(self, family: str, arg: str) -> Fault:
        if family == "kill":
            node, sig = arg.split(":")
            end = time.monotonic() + 30.0      # a node still in its respawn delay: wait
            while not self.graph.running(node) and time.monotonic() < end:
                time.sleep(0.1)
            fault = Fault(family, node, time.monotonic(), wall=time.time())
            fault.info = self.graph.kill(node, getattr(signal, sig))
        else:
            fault = Fault(family, "", time.monotonic(), wall=time.time())
            getattr(self, f"_{family}")(fault, arg)
        fault.t_done = time.monotonic()
        self.faults.append(fault)
        return fault

    def _sim(self, command: dict) -> dict:
        answer = send_command(self.control, command, timeout_s=10.0)
        if not answer.get("ok"):
            raise RuntimeError(f"simulator refused {command}: {answer.get('error')}")
        return answer

    def _reboot_pdu(self, fault: Fault, _) -> None:
        fault.target = self.rng.choice(sorted(self.pdus))
        fault.info = self._sim({"cmd": "reboot_pdu", "pdu": fault.target})

    def _reboot_bmc(self, fault: Fault, which: str) -> None:
        chassis = None if which == "all" else self.rng.choice(sorted(self.manifest["bmcs"]))
        fault.target = chassis or "all"
        fault.info = self._sim({"cmd": "reboot_bmc", "chassis": chassis})

    def _foreign_modbus(self, fault: Fault, _) -> None:
        """Another Modbus client raises one component's outlet allocation register."""
        i = self.rng.randrange(len(self.names))
        pdu, outlet = self.outlets[i]
        p = self.pdus[pdu]
        point = load_register_map(p["map"]).point("outlet_allocation_w")
        client = ModbusTcpClient(p["host"], port=p["port"], timeout=2.0)
        try:
            if not client.connect():
                raise RuntimeError(f"foreign write: cannot connect to {p['url']}")
            words = [int(w) for w in point.encode([FOREIGN_OUTLET_W])[0]]
            reply = client.write_registers(int(point.address_of([outlet])[0]), words,
                                           device_id=p["unit_id"])
            if reply.isError():
                raise RuntimeError(f"foreign write to {p['url']} refused: {reply}")
        finally:
            client.close()
        fault.target = self.names[i]
        fault.info = {"pdu": pdu, "outlet": outlet, "value_w": FOREIGN_OUTLET_W}

    def _foreign_redfish(self, fault: Fault, _) -> None:
        """A PATCH of one server's power limit, as `curl -u admin:... -X PATCH` sends it."""
        from rackpower_nodes.tools.demo import SIM_BMC_PASSWORD, SIM_BMC_USER

        chassis = self.rng.choice(sorted(self.manifest["bmcs"]))
        url = self.manifest["bmcs"][chassis]
        auth = base64.b64encode(f"{SIM_BMC_USER}:{SIM_BMC_PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5.0) as resp:
            doc = json.load(resp)
        if "EnvironmentMetrics" in doc:
            path = "EnvironmentMetrics"
            body = {"PowerLimitWatts": {"SetPoint": FOREIGN_LIMIT_W, "ControlMode": "Automatic"}}
        else:
            path = "Power"
            body = {"PowerControl": [{"PowerLimit": {"LimitInWatts": FOREIGN_LIMIT_W}}]}
        req = urllib.request.Request(f"{url}/{path}", data=json.dumps(body).encode(),
                                     headers=headers, method="PATCH")
        with urllib.request.urlopen(req, timeout=5.0) as resp:
            status = resp.status
        fault.target = chassis
        fault.info = {"resource": path, "value_w": FOREIGN_LIMIT_W, "http": status}

    def _garbage(self, fault: Fault, _) -> None:
        fault.info = self._sim({"cmd": "garbage", "bytes": GARBAGE_BYTES})

    def _board_stall(self, fault: Fault, _) -> None:
        fault.info = self._sim({"cmd": "board_stall", "seconds": STALL_S})

    def _cable_pull(self, fault: Fault, _) -> None:
        fault.info = self._sim({"cmd": "cable_pull", "seconds": PULL_S})


# -- judgement --------------------------------------------------------------------------------
def _first(samples: list[cc.Sample], t0: float, ok) -> float | None:
    return next((s.t for s in samples if s.t >= t0 and ok(s)), None)


def _min(*times):
    known = [t for t in times if t is not None]
    return min(known) if known else None


def judge(f: Fault, t_next: float, w: cc.GraphWatcher, checker: cc.DeviceChecker,
          starts: dict[str, list[float]], budget_w: float) -> None:
    """Set f.detected / f.corrected (monotonic s, None: not seen) and f.how."""
    t1 = max(t_next, f.t_done + 1.0)       # signals any fault may cause: until the next one
    td = f.t + DETECT_WITHIN_S              # a device's own counters
    safe = (lambda m, r, wr: m == "safe")
    back = (lambda m, r, wr: m == "proactive" and wr)
    samples, names = checker.samples, checker.names
    within = (lambda s: s.total_w <= budget_w + cc.TOLERANCE_W)
    if f.family == "kill":
        node = f.target
        restart = next((t for t in starts[node] if t >= f.info["exit_t"]), math.inf)
        if node in ("current_sensor", "predictor"):
            f.detected, f.how = w.first_allocation(f.t, t1, safe), "actuator in safe mode"
            f.corrected = w.first_allocation(restart, restart + CORRECT_WITHIN_S, back)
            return
        f.detected, f.how = f.info["exit_t"], "process exit (respawn)"
        if node == "pdu_actuator":
            f.corrected = w.first_allocation(restart, math.inf, lambda m, r, wr: wr)
        elif node == "host_telemetry":
            f.corrected = w.first_after(w.telemetry, restart)
        else:
            suffix = {"recorder": "recorder: recorder",
                      "retrain_scheduler": "retrain_scheduler: retraining"}[node]
            f.corrected = w.first_after([e[0] for e in w.statuses(suffix)], restart)
    elif f.family in ("board_stall", "cable_pull"):
        length = STALL_S if f.family == "board_stall" else PULL_S
        f.detected, f.how = w.first_allocation(f.t, t1, safe), "actuator in safe mode"
        f.corrected = w.first_allocation(f.t + length, f.t + CORRECT_WITHIN_S, back)
    elif f.family == "garbage":
        f.detected = w.counter_rise("current_sensor: sensor board", ("bytes_discarded",),
                                    f.t, t1)
        f.how = "sensor's bytes_discarded"
        f.corrected = w.first_after([s[0] for s in w.samples], f.detected or math.inf)
    elif f.family == "reboot_pdu":
        idx = [i for i, (p, _) in enumerate(checker.outlets) if p == f.target]
        fixed = _first(samples, f.t_done, lambda s: within(s) and bool(
            np.all(s.outlet_w[idx] < checker.defaults_w[idx] - 1.0)))
        diag = w.counter_rise(f"PDU {f.target}", ("reboots", "foreign_values"), f.t, td)
        f.detected, f.corrected = _min(diag, fixed), fixed
        f.how = "actuator diagnostics" if diag is not None and diag == f.detected \
            else "device read back corrected"
    elif f.family == "reboot_bmc":
        chassis = [c for c in checker.bmc_names] if f.target == "all" else [f.target]
        det, fix, how = [], [], set()
        for c in chassis:
            i = names.index(c)
            fixed = _first(samples, f.t_done, lambda s, i=i: bool(np.isfinite(s.bmc_w[i])))
            diag = w.counter_rise(f"bmc:{c}", ("reboots", "foreign_values"), f.t, td)
            det.append(_min(diag, fixed))
            fix.append(fixed)
            how.add("actuator diagnostics" if diag is not None and diag == det[-1]
                    else "device read back corrected")
        f.detected = None if None in det else max(det)
        f.corrected = None if None in fix else max(fix)
        f.how = " / ".join(sorted(how))
    elif f.family in ("foreign_modbus", "foreign_redfish"):
        i = names.index(f.target)
        value = f.info["value_w"]
        if f.family == "foreign_modbus":
            suffix = f"PDU {f.info['pdu']}"
            fixed = _first(samples, f.t_done, lambda s: abs(s.outlet_w[i] - value)
                           > cc.TOLERANCE_W and within(s))
        else:
            suffix = f"bmc:{f.target}"
            fixed = _first(samples, f.t_done, lambda s: abs(s.bmc_w[i] - value)
                           > cc.TOLERANCE_W)
        diag = w.counter_rise(suffix, ("foreign_values",), f.t, td)
        f.detected, f.corrected = _min(diag, fixed), fixed
        f.how = "actuator diagnostics" if diag is not None and diag == f.detected \
            else "device read back corrected"
