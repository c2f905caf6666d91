"""The live simulator's control channel (rackpower-sim live --control): each command's effect
on a LiveRack, through the real Unix socket; no DDS."""
from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from helpers import REPO
from pymodbus.client import ModbusTcpClient

from rackpower_nodes.core.frame_codec import FrameDecoder
from rackpower_nodes.core.pdu_map import load_register_map
from rackpower_nodes.drivers.bmc import RedfishPowerCap
from rackpower_nodes.sim.control import ControlServer, send_command
from rackpower_nodes.sim.live import LiveRack


def _wait(condition, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)


@pytest.fixture()
def rack(tmp_path):
    live = LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=200.0,
                    bmc_port=0)
    with live, ControlServer(live, tmp_path / "control.sock") as server:
        live.sock = server.path
        yield live


def _ask(rack, **command) -> dict:
    return send_command(rack.sock, command)


def test_reboot_pdu_restores_power_on_defaults_and_counts_a_boot(rack):
    pdu = rack.pdus["pdu-a"]
    fmt = load_register_map("rackpower_sim").point("outlet_allocation_w")
    client = ModbusTcpClient(pdu.host, port=pdu.port)
    assert client.connect()
    client.write_registers(fmt.address, [int(w) for w in fmt.encode([120.0])[0]], device_id=1)
    client.close()
    outlet = rack.manifest()["pdus"][0]
    assert rack.pdu_stats()["components"]["srv01"]["allocation_w"] == 120.0
    boots = pdu.boot_count
    answer = _ask(rack, cmd="reboot_pdu", pdu="pdu-a")
    assert answer == {"ok": True, "pdu": "pdu-a", "down_s": 0.0, "boot_count": boots + 1}
    assert rack.pdu_stats()["components"]["srv01"]["allocation_w"] == outlet["defaults_w"][0]
    assert pdu.running
    bad = _ask(rack, cmd="reboot_pdu", pdu="pdu_c")
    assert not bad["ok"] and "pdu = 'pdu_c'" in bad["error"] and "pdu-a" in bad["error"]


def test_reboot_bmc_clears_one_limit_or_all_and_drops_sessions(rack):
    urls = rack.manifest()["bmcs"]
    caps = {c: RedfishPowerCap(urls[c], username="admin", password="rackpower", timeout_s=2.0)
            for c in ("srv01", "srv02")}
    for cap in caps.values():
        cap.connect()
        cap.write_allocations([1], [150.0])
    assert rack.bmc.limit_w("srv01") == 150.0 and rack.bmc.limit_w("srv02") == 150.0
    assert _ask(rack, cmd="reboot_bmc", chassis="srv01") == {"ok": True, "chassis": "srv01"}
    assert rack.bmc.limit_w("srv01") is None and rack.bmc.limit_w("srv02") == 150.0
    assert rack.pdu_stats()["components"]["srv01"]["server_cap_w"] is None
    with pytest.raises(Exception, match="401"):
        caps["srv01"].read_allocations([1])          # its session is gone with the reboot
    assert _ask(rack, cmd="reboot_bmc", chassis=None)["ok"]
    assert rack.bmc.limit_w("srv02") is None
    bad = _ask(rack, cmd="reboot_bmc", chassis="tor-a")
    assert not bad["ok"] and "chassis = 'tor-a'" in bad["error"]
    for cap in caps.values():
        cap.close()


def test_board_stall_stops_frames_for_its_duration(rack):
    _wait(lambda: rack.board.stats.frames_generated > 20, "the board sampling")
    answer = _ask(rack, cmd="board_stall", seconds=0.5)
    assert answer == {"ok": True, "seconds": 0.5} and rack.board.stalled
    _wait(lambda: not rack.board.stalled, "the stall ending")
    lost = rack.board.stats.frames_lost_stalled
    assert 0.5 * 200 * 0.5 < lost <= 0.5 * 200 + 5     # about 100 frames at 200 Hz
    generated = rack.board.stats.frames_generated
    _wait(lambda: rack.board.stats.frames_generated > generated + 10, "sampling resuming")
    assert rack.board.stats.frames_lost_stalled == lost
    bad = _ask(rack, cmd="board_stall", seconds=-1)
    assert not bad["ok"] and "seconds = -1" in bad["error"]


def test_cable_pull_unplugs_the_board_and_plugs_it_back(rack):
    assert rack.board.plugged
    assert _ask(rack, cmd="cable_pull", seconds=0.5) == {"ok": True, "seconds": 0.5}
    _wait(lambda: not rack.board.plugged, "the cable pulled")
    again = _ask(rack, cmd="cable_pull", seconds=0.5)
    assert not again["ok"] and "already in progress" in again["error"]
    _wait(lambda: rack.board.plugged, "the cable plugged back in")
    assert rack.board.stats.frames_lost_unplugged > 0


def test_garbage_reaches_the_link_and_stats_report_everything(rack):
    decoder = FrameDecoder(rack.board.layout)
    with open(rack.board.port_path, "rb", buffering=0) as port:
        answer = _ask(rack, cmd="garbage", bytes=4096)
        assert answer == {"ok": True, "bytes": 4096}
        assert rack.board.stats.garbage_bytes_injected == 4096
        deadline = time.monotonic() + 10.0
        while decoder.stats.bytes_discarded < 4096 and time.monotonic() < deadline:
            decoder.feed(port.read(65536))
    assert decoder.stats.bytes_discarded >= 4096, "the garbage did not reach the link"
    stats = _ask(rack, cmd="stats")
    assert stats["ok"] and stats["breaker_trips"] == 0 and stats["breaker_tripped"] is False
    assert stats["injected"] == {"garbage": 1}
    assert set(stats["bmc_limits_w"]) == set(rack.bmc_chassis())
    assert stats["board"]["garbage_bytes_injected"] == 4096 and stats["board_plugged"]
    assert stats["pdu"]["components"]["srv01"]["allocation_w"] > 0


def test_bad_requests_are_answered_with_the_reason(rack):
    assert "cmd = 'explode'" in _ask(rack, cmd="explode")["error"]
    assert "bytes = 0" in _ask(rack, cmd="garbage", bytes=0)["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(str(rack.sock))
        sock.sendall(b"{not json\n[1, 2]\n")
        with sock.makefile("rb") as f:
            first, second = json.loads(f.readline()), json.loads(f.readline())
    assert not first["ok"] and "not JSON" in first["error"]
    assert not second["ok"] and "expected a JSON object" in second["error"]
    assert np.isfinite(_ask(rack, cmd="stats")["t_s"])


def test_cli_live_control_option():
    from rackpower_nodes.sim.cli import _parser

    args = _parser().parse_args(["live", "--link", "/tmp/b", "--control", "/tmp/c.sock"])
    assert str(args.control) == "/tmp/c.sock"
    assert _parser().parse_args(["live", "--link", "/tmp/b"]).control is None


def test_live_exits_0_with_ctrl_c_repeated_while_it_stops(tmp_path):
    """`rackpower-sim live` under ros2 launch gets a terminal's SIGINT and launch's on top:
    every signal after the first, however late in its exit, is ignored and the exit code is 0
    (the interpreter puts the default handlers back while it exits: a late one killed it)."""
    import os
    import signal
    import subprocess
    import sys

    control = tmp_path / "control.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rackpower_nodes.sim.cli", "live", "--link",
         str(tmp_path / "board"), "--exporter-base-port", "0", "--pdu-base-port", "0",
         "--bmc-port", "0", "--control", str(control)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            str(REPO),
            os.environ.get("PYTHONPATH", "")]))})
    try:
        _wait(lambda: control.exists() or proc.poll() is not None, "control socket", 60.0)
        assert proc.poll() is None, proc.stderr.read()
        sent = 0
        while proc.poll() is None and sent < 2000:      # SIGINT every 2 ms until it is gone
            proc.send_signal(signal.SIGINT)
            sent += 1
            time.sleep(0.002)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert code == 0, (code, sent, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
