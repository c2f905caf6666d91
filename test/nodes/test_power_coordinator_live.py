"""A live room over DDS: three racks (each its simulated PDU and its pdu_actuator, every one
in a process of its own, in the rack's namespace) and one power_coordinator process.

The test drives each rack's demand by publishing its power_samples, and reads every PDU's
allocation registers back over Modbus all along (`PduPoller`), so the room sum is checked
from the devices, not from what the nodes say:

1. rack r1 busy, r2 idle, r3 medium: the budget moves to r1 (r2 shrinks first);
2. swapped (r1 idle, r2 busy): the budget moves to r2; then r1's actuator is restarted
   (Ctrl-C and started again): it rejoins without the room going over;
3. the coordinator killed (SIGKILL): every rack's PowerAllocation.budget_w reaches its
   guaranteed share within one lease of the last grant it received (as the test sees
   both: plus TOLERANCE_S for delivery);
4. the coordinator restarted: sharing resumes (budgets away from the guaranteed shares);
and at every poll of the devices, the room sum is at most the room rating. It runs twice:
with DDS's simple discovery on loopback, and with every process (the test's too) a client of
one Fast DDS discovery server (`ROS_DISCOVERY_SERVER`), as on many controllers without
multicast.

Room, racks and numbers: test/helpers/room_live.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import REPO
from helpers.rack import free_port
from helpers.room_live import (
    BUSY, GUARANTEED_W, IDLE, LEASE_S, MEDIUM, PERIOD_S, RACKS, ROOM_W, PduPoller,
    RoomWatch, actuator_params, coordinator_params, start_discovery_server, start_pdu, tree_doc)

from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

# A rack's control step takes the budget its lease will give by the next step (at most 1.5
# control periods later: the actuator's watchdog), so the guaranteed share is allocated
# within the lease; what the test adds is delivery and scheduling on a loaded 2-core machine
# (its own receipt of the last grant and of the allocation), up to a few hundred ms.
TOLERANCE_S = 0.35
MOVED_W = 1500.0                   # a rack that got the room's spare power holds above this
SHRUNK_W = 400.0                   # a rack that gave it away holds below this
REGISTER_W = 0.01                  # float32 registers: what a sum may carry in rounding


def _write(path, node: str, params: dict) -> str:
    path.write_text(yaml.safe_dump({f"/**/{node}": {"ros__parameters": params}}))
    return str(path)


def _start(name: str, args: list[str], env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([str(executable(name)), "--ros-args", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _fallback_delays(watch: RoomWatch, killed_at: float) -> dict[str, float]:
    """Per rack: from the last grant it was sent (received by the test) to its first
    allocation at the guaranteed share after which it stays there, s."""
    out = {}
    with watch.lock:
        for r in RACKS:
            last_grant = max(t for t, _, _ in watch.grants[r] if t <= killed_at)
            after = [(t, b) for t, b, _, _ in watch.allocations[r] if t > last_grant]
            at = None
            for t, b in after:
                if abs(b - GUARANTEED_W) <= 1e-6:
                    at = t if at is None else at
                else:
                    at = None
            out[r] = at - last_grant
    return out


def _diag_budget_w(watch: RoomWatch, rack: str) -> float:
    """The budget the coordinator's newest diagnostics report for `rack`, W; NaN while it
    reports 'none' (no grant for the rack in that period)."""
    text = watch.coordinator_diag[rack]["budget_w"]
    return float("nan") if text == "none" else float(text)


_CHILD = "RACKPOWER_ROOM_TEST_CHILD"
_TEST = "test_a_room_of_three_racks_shares_its_budget_and_survives_its_coordinator"


def _run_in_child(node_id: str) -> None:
    """Run one test in a pytest process of its own (its output shown when it fails)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                          node_id], env=dict(os.environ, **{_CHILD: "1"}), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=900)
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stdout[-8000:]


@pytest.mark.parametrize("discovery", ["simple", "discovery_server"])
def test_a_room_of_three_racks_shares_its_budget_and_survives_its_coordinator(
        ros_env, tmp_path, monkeypatch, discovery):
    import rclpy

    server = None
    if discovery == "discovery_server" and os.environ.get(_CHILD) != "1":
        # Fast DDS keeps a process's discovery mode once it has made a participant, so a
        # test process that joined the discovery server would leave every later DDS test of
        # the run unable to discover anything: this variant runs in a pytest of its own
        _run_in_child(f"{__file__}::{_TEST}[discovery_server]")
        return
    if discovery == "discovery_server":
        # every process, the test's too, a client of one Fast DDS discovery server
        ds_port = free_port()
        server = start_discovery_server(ds_port, ros_env, open(tmp_path / "ds.log", "w"))
        if server is None:
            pytest.skip("fast-discovery-server is not installed with the venv's Fast DDS")
        ros_env = dict(ros_env, ROS_DISCOVERY_SERVER=f"127.0.0.1:{ds_port}")
        monkeypatch.setenv("ROS_DISCOVERY_SERVER", f"127.0.0.1:{ds_port}")
    ports = {r: free_port() for r in RACKS}
    tree = tmp_path / "room.yaml"
    tree.write_text(yaml.safe_dump(tree_doc()))
    coord_params = ["--params-file",
                    _write(tmp_path / "coordinator.yaml", "power_coordinator",
                           coordinator_params(str(tree)))]
    logs = {name: open(tmp_path / f"{name}.log", "w")
            for name in (*RACKS, "r1_restarted", "coordinator", "coordinator2", "pdus")}
    procs: list[subprocess.Popen] = []
    poller = watch = None
    try:
        for r in RACKS:
            procs.append(start_pdu(sys.executable, ports[r], ros_env, logs["pdus"]))
        poller = PduPoller(ports).start()       # from before any actuator writes
        rack_args = {r: ["-r", f"__ns:=/{r}", "--params-file", _write(
            tmp_path / f"{r}.yaml", "pdu_actuator", actuator_params(ports[r]))] for r in RACKS}
        for r in RACKS:
            procs.append(_start("pdu_actuator", rack_args[r], ros_env, logs[r]))
        coordinator = _start("power_coordinator", coord_params, ros_env, logs["coordinator"])
        procs.append(coordinator)
        with rclpy.init():
            watch = RoomWatch()

            # 1. r1 busy, r2 idle, r3 medium: the spare power goes to r1
            watch.measured.update(r1=BUSY.copy(), r2=IDLE.copy(), r3=MEDIUM.copy())
            assert watch.wait(lambda: watch.budget("r1") > MOVED_W
                              and watch.budget("r2") < SHRUNK_W, 90.0), \
                {r: watch.budget(r) for r in RACKS}
            # the test's own subscription to the grants may match after the racks' did (slow
            # discovery on a loaded machine): the coordinator re-sends every period
            assert watch.wait(lambda: len(watch.grants["r1"]) > 0, 30.0), "no grant seen"
            # the coordinator reports every rack on /diagnostics (once a second)
            assert watch.wait(lambda: {"r1", "r2", "r3"} <= set(watch.coordinator_diag)
                              and _diag_budget_w(watch, "r1") > MOVED_W
                              and watch.coordinator_diag["r1"]["stale"] == "False", 30.0), \
                watch.coordinator_diag
            # 2. swapped: the budget follows the demand
            watch.measured.update(r1=IDLE.copy(), r2=BUSY.copy())
            swapped = time.monotonic()
            assert watch.wait(lambda: watch.budget("r2") > MOVED_W
                              and watch.budget("r1") < SHRUNK_W, 30.0), \
                {r: watch.budget(r) for r in RACKS}
            print(f"demand swapped -> budgets moved in {time.monotonic() - swapped:.2f} s "
                  f"(period {PERIOD_S:g} s)")

            # a rack's actuator restarted (Ctrl-C, then started again) while the room runs:
            # it leaves at most its budget, starts no higher than its devices hold, rejoins
            assert stop_process(procs[len(RACKS)], 10.0) == 0
            count = len(watch.allocations["r1"])
            procs[len(RACKS)] = _start("pdu_actuator", rack_args["r1"], ros_env,
                                       logs["r1_restarted"])
            assert watch.wait(lambda: len(watch.allocations["r1"]) > count + 20
                              and watch.budget("r2") > MOVED_W
                              and watch.budget("r1") < SHRUNK_W, 60.0), \
                {r: watch.budget(r) for r in RACKS}

            # 3. the coordinator dies without a word: each rack on its guaranteed share
            coordinator.send_signal(signal.SIGKILL)
            coordinator.wait(10)
            killed_at = time.time()
            assert watch.wait(lambda: all(watch.budget(r) == pytest.approx(GUARANTEED_W)
                                          for r in RACKS), LEASE_S + 15.0), \
                {r: watch.budget(r) for r in RACKS}
            time.sleep(0.5)     # the later allocations must stay there (checked below)
            delays = _fallback_delays(watch, killed_at)
            print(f"coordinator killed -> guaranteed share after (s, from the last grant "
                  f"received): {', '.join(f'{r} {d:.2f}' for r, d in delays.items())}; lease "
                  f"{LEASE_S:g} s, tolerance {TOLERANCE_S:.2f} s")
            assert all(d <= LEASE_S + TOLERANCE_S for d in delays.values()), delays

            # 4. restarted: sharing resumes
            coordinator = _start("power_coordinator", coord_params, ros_env,
                                 logs["coordinator2"])
            procs.insert(len(RACKS), coordinator)
            assert watch.wait(lambda: watch.budget("r2") > MOVED_W
                              and watch.budget("r1") < SHRUNK_W, 60.0), \
                {r: watch.budget(r) for r in RACKS}
            time.sleep(1.0)
            watch.close()
        assert stop_process(coordinator, 10.0) == 0      # an orderly exit (SIGINT)
    finally:
        # the coordinator(s) first, then the actuators (each leaves at most its budget in
        # force, never above its guaranteed share), polled all the way; the PDUs last
        for p in procs[len(RACKS):]:
            stop_process(p, 10.0)
        if poller is not None:
            poller.stop()
        for p in procs[:len(RACKS)]:
            stop_process(p, 10.0)
        if server is not None:
            stop_process(server, 5.0)
        for f in logs.values():
            f.close()

    for name in (*RACKS, "r1_restarted", "coordinator", "coordinator2"):
        text = (tmp_path / f"{name}.log").read_text()
        assert "control step failed" not in text and "Traceback" not in text, text[-3000:]
    # the devices, polled all along: the room never held more than its rating
    assert len(poller.passes) > 100, poller.failures[-3:]
    worst = max(poller.passes, key=lambda p: p[2])
    held = ", ".join(f"{r} {w:.0f}" for r, w in worst[3].items())
    print(f"{len(poller.passes)} polls of the three PDUs; the most the room held: "
          f"{worst[2]:.1f} W of {ROOM_W:.0f} W ({held} W); slowest pass "
          f"{max(p[1] for p in poller.passes) * 1e3:.0f} ms")
    assert worst[2] <= ROOM_W + REGISTER_W, worst
    # and they did move: some rack held well above its guaranteed share at some point
    assert max(max(p[3].values()) for p in poller.passes) > MOVED_W
