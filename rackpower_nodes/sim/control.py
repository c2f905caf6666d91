"""Fault injection in the live rack simulator: a control channel on a Unix socket.

`rackpower-sim live --control PATH` listens on the Unix socket PATH. A client sends one JSON
object per line and gets one JSON object per line back: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}`` naming the key and the value refused. Commands:

- ``{"cmd": "reboot_pdu", "pdu": "pdu-a", "down_s": 0}``: the PDU restarts with its power-on
  defaults (`SimPduServer.reboot`: connections dropped, allocation registers back to the
  outlet ratings, boot counter up), listening again after ``down_s`` s (optional, default 0);
- ``{"cmd": "reboot_bmc", "chassis": "srv01"}`` (or ``null`` for every chassis): the BMC
  restarts (`SimBmcServer.reboot`: limits back to their defaults, sessions dropped);
- ``{"cmd": "board_stall", "seconds": 3}``: the sensor board hangs (port open, nothing sent);
- ``{"cmd": "cable_pull", "seconds": 2}``: the board's cable is pulled and plugged back in
  after `seconds` (answered at once; ``stats`` tells whether it is plugged);
- ``{"cmd": "garbage", "bytes": 4096}``: that many random bytes on the board's link;
- ``{"cmd": "inject_fault", "fault": {"kind": "fan_wear", "component": "srv03",
  "growth_s": 600, "magnitude": 12, "onset_s": 30}}``: a simulated component or sensor fault
  (`FaultSpec` fields; ``onset_s`` in simulated s, default now; ``growth_s`` default 0;
  ``magnitude`` default the middle of the kind's range, `faults.plan.RANGES`), answered with
  the fault as injected (``"fault": {...}``; a component fault starts with the first sample
  not yet generated, `RackSimulator.inject`);
- ``{"cmd": "fail_feed", "feed": "A"}`` / ``{"cmd": "restore_feed", "feed": "A"}`` (with
  ``--feeds``): feed A lost (its PDUs stop answering, its single-corded components go dark,
  the survivors carry the dual-corded load) or back (its PDUs boot with their defaults);
  `sim/feeds/live.py`;
- ``{"cmd": "stats"}``: breaker trips, the PDU model's counters (`LiveRack.pdu_stats`), each
  BMC's limit (W, null = none), the board's counters, the faults injected so far (counts by
  command, and ``faults``: the simulated faults as injected), ``feeds`` (`FeedRack.stats`
  and the feeds ``down``; null without feeds).

Anyone who can open the socket can do all of this: it is a test fixture, made with the
permissions of the simulator's user (mode 0600).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import socketserver
import threading
from collections import Counter
from pathlib import Path

from rackpower_nodes.sim.faults import FaultSpec
from rackpower_nodes.sim.faults.plan import RANGES
from rackpower_nodes.sim.live import LiveRack

__all__ = ["COMMANDS", "ControlServer", "RackControl", "send_command"]

_log = logging.getLogger(__name__)

COMMANDS = ("reboot_pdu", "reboot_bmc", "board_stall", "cable_pull", "garbage", "inject_fault",
            "fail_feed", "restore_feed", "stats")
MAX_LINE = 64 * 1024            # bytes of one request line
MAX_FAULT_S = 600.0             # longest stall or cable pull, s


class ControlError(ValueError):
    """A request the control channel refuses (the message names the key and value)."""


def _number(req: dict, key: str, lo: float, hi: float) -> float:
    value = req.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not lo <= value <= hi:
        raise ControlError(f"{key} = {value!r}: expected a number {lo:g}..{hi:g}")
    return float(value)


class RackControl:
    """Applies control commands (module docstring) to a running `LiveRack`; thread-safe."""

    def __init__(self, rack: LiveRack):
        self.rack = rack
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pull: threading.Thread | None = None

    def handle(self, request: object) -> dict:
        """Apply one command; returns the answer (never raises for a bad request)."""
        try:
            if not isinstance(request, dict):
                raise ControlError(f"request {request!r}: expected a JSON object")
            cmd = request.get("cmd")
            if cmd not in COMMANDS:
                raise ControlError(f"cmd = {cmd!r}: expected one of {', '.join(COMMANDS)}")
            answer = getattr(self, f"_{cmd}")(request)
        except (ControlError, KeyError, ValueError, RuntimeError) as exc:
            return {"ok": False, "error": str(exc).strip("'\"")}
        if cmd != "stats":
            with self._lock:
                self.injected[cmd] += 1
            _log.info("fault injected: %s", json.dumps(request, sort_keys=True))
        return {"ok": True, **answer}

    def close(self) -> None:
        """End a cable pull in progress (the cable is plugged back in)."""
        self._stop.set()
        pull = self._pull
        if pull is not None:
            pull.join(5.0)

    def _reboot_pdu(self, req: dict) -> dict:
        name = req.get("pdu")
        if name not in self.rack.pdus:
            raise ControlError(f"pdu = {name!r}: expected one of {', '.join(self.rack.pdus)}")
        down_s = _number(req, "down_s", 0.0, MAX_FAULT_S) if "down_s" in req else 0.0
        server = self.rack.pdus[name]
        server.reboot(down_s)
        return {"pdu": name, "down_s": down_s, "boot_count": server.boot_count}

    def _reboot_bmc(self, req: dict) -> dict:
        if self.rack.bmc is None:
            raise ControlError("reboot_bmc: this rack runs no simulated BMCs")
        chassis = req.get("chassis")
        known = self.rack.bmc_chassis()
        if chassis is not None and chassis not in known:
            raise ControlError(f"chassis = {chassis!r}: expected null (all) or one of "
                               f"{', '.join(known)}")
        self.rack.bmc.reboot(chassis)
        return {"chassis": chassis}

    def _board_stall(self, req: dict) -> dict:
        seconds = _number(req, "seconds", 0.0, MAX_FAULT_S)
        self.rack.board.stall(seconds)
        return {"seconds": seconds}

    def _cable_pull(self, req: dict) -> dict:
        seconds = _number(req, "seconds", 0.0, MAX_FAULT_S)
        with self._lock:
            if self._pull is not None and self._pull.is_alive():
                raise ControlError("cable_pull: a cable pull is already in progress")
            self._pull = threading.Thread(target=self._pull_for, args=(seconds,),
                                          name="cable-pull", daemon=True)
            self._pull.start()
        return {"seconds": seconds}

    def _pull_for(self, seconds: float) -> None:
        board = self.rack.board
        board.unplug()
        self._stop.wait(seconds)
        board.replug()

    def _garbage(self, req: dict) -> dict:
        nbytes = int(_number(req, "bytes", 1, 1 << 20))
        self.rack.board.send_garbage(nbytes)
        return {"bytes": nbytes}

    def _inject_fault(self, req: dict) -> dict:
        fault = req.get("fault")
        if not isinstance(fault, dict):
            raise ControlError(f"fault = {fault!r}: expected an object of FaultSpec fields")
        kind = fault.get("kind")
        if kind not in RANGES:
            raise ControlError(f"fault.kind = {kind!r}: expected one of {', '.join(RANGES)}")
        fields = {"onset_s": self.rack.sim_time(), "growth_s": 0.0,
                  "magnitude": RANGES[kind].typical}
        fields.update(fault)
        fields.setdefault("growth", "step" if fields["growth_s"] == 0 else "linear")
        return {"fault": self.rack.inject_fault(FaultSpec.from_dict(fields)).as_dict()}

    def _fail_feed(self, req: dict) -> dict:
        return self._feeds().fail(req.get("feed"))

    def _restore_feed(self, req: dict) -> dict:
        return self._feeds().restore(req.get("feed"))

    def _feeds(self):
        if self.rack.feeds is None:
            raise ControlError("fail_feed/restore_feed: this rack runs without feeds "
                               "(rackpower-sim live --feeds)")
        return self.rack.feeds

    def _stats(self, req: dict) -> dict:
        rack = self.rack
        pdu = rack.pdu_stats()
        bmcs = ({c: rack.bmc.limit_w(c) for c in rack.bmc_chassis()}
                if rack.bmc is not None else {})
        with self._lock:
            injected = dict(self.injected)
        return {"t_s": rack.sim_time(), "breaker_trips": int(pdu.get("trips", 0)),
                "breaker_tripped": bool(pdu.get("tripped", False)), "pdu": pdu,
                "bmc_limits_w": bmcs, "board": dataclasses.asdict(rack.board.stats),
                "board_plugged": rack.board.plugged, "board_stalled": rack.board.stalled,
                "injected": injected,
                "faults": [f.as_dict() for f in rack.sim.faults],
                "feeds": None if rack.feeds is None else rack.feeds.stats()}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        control: RackControl = self.server.control      # type: ignore[attr-defined]
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                self._reply({"ok": False, "error": f"request line over {MAX_LINE} bytes"})
                return
            try:
                request = json.loads(line)
            except ValueError as exc:
                answer = {"ok": False, "error": f"request is not JSON: {exc}"}
            else:
                answer = control.handle(request)
            self._reply(answer)

    def _reply(self, answer: dict) -> None:
        self.wfile.write(json.dumps(answer, default=float).encode() + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class ControlServer:
    """The control channel of a `LiveRack` on the Unix socket `path` (mode 0600)."""

    def __init__(self, rack: LiveRack, path: str | os.PathLike):
        self.path = Path(path)
        self.control = RackControl(rack)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ControlServer:
        """Listen (OSError when the path cannot be bound; a stale socket file is replaced)."""
        if self.path.is_socket():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        server.control = self.control              # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.1}, name="sim-control", daemon=True)
        self._thread.start()
        _log.info("control channel on %s", self.path)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5.0)
        self.control.close()
        if self.path.is_socket():
            self.path.unlink()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def send_command(path: str | os.PathLike, command: dict, timeout_s: float = 5.0) -> dict:
    """Send one command to the control channel at `path`; returns its answer (OSError when
    the simulator does not answer within `timeout_s` s)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(json.dumps(command).encode() + b"\n")
        with sock.makefile("rb") as f:
            line = f.readline(16 * MAX_LINE)
    if not line:
        raise OSError(f"control channel {path}: closed without an answer to {command}")
    return json.loads(line)
