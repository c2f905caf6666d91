"""What the Redfish BMC client and server tests share: a simulated BMC with one chassis per
schema on loopback, a factory of connected clients, and Debian's curl as an independent client
reading back what the client wrote and probing the server's checks.

Fixtures (a test file imports the ones it uses; pytest finds them in its namespace):
- `_direct` (autouse where imported): loopback requests bypass any proxy in the environment;
- `limit_calls`, `bmc`: the chassis em, pc, mix, both, none (see APIS), their readings
  POWER_W (W), limits 150 (em, both) .. 800 W, every limit change appended to `limit_calls`;
- `caps`: caps(server, chassis, connect=True, **kw) -> RedfishPowerCap, closed at the end.

Functions: `curl` (status, headers, JSON body), `patch` (a PATCH by curl) and `messages`
(a Redfish error's MessageIds and Messages).
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from rackpower_nodes.drivers.bmc import RedfishPowerCap
from rackpower_nodes.sim.bmc import SimBmcServer

CURL = shutil.which("curl") or "/usr/bin/curl"
USER, PASSWORD = "admin", "rackpower"
POWER_W = {"em": 344.0, "pc": 287.5, "mix": 199.0, "both": 120.0, "none": 55.0}
APIS = {"em": "environment_metrics", "pc": "power_control", "mix": "mixed", "both": "both",
        "none": "none"}
SESSIONS = "/redfish/v1/SessionService/Sessions"

__all__ = ["APIS", "CURL", "PASSWORD", "POWER_W", "SESSIONS", "USER", "_direct", "bmc", "caps",
           "curl", "limit_calls", "messages", "patch"]


@pytest.fixture(autouse=True)
def _direct(monkeypatch):
    """Loopback requests must not go through a proxy configured in the environment."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def limit_calls() -> list:
    return []


@pytest.fixture
def bmc(limit_calls):
    srv = SimBmcServer(list(APIS), api=APIS, allowable_min_w={"em": 150.0, "both": 150.0},
                       allowable_max_w=800.0, power_w=POWER_W.__getitem__,
                       on_limit=lambda c, w: limit_calls.append((c, w)))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def caps():
    """Factory of RedfishPowerCap clients (closed at the end): caps(server, chassis, **kw)."""
    made: list[RedfishPowerCap] = []

    def make(srv: SimBmcServer, chassis: str, connect: bool = True, **kwargs):
        kwargs = {"username": USER, "password": PASSWORD, "timeout_s": 2.0} | kwargs
        cap = RedfishPowerCap(srv.chassis_url(chassis), **kwargs)
        made.append(cap)
        if connect:
            cap.connect()
        return cap

    yield make
    for cap in made:
        cap.close()


def curl(url: str, *args: str, auth: bool = True) -> tuple[int, dict, dict]:
    """(status, headers with lower-case names, JSON body or {}) of one request by curl."""
    if not shutil.which(CURL):
        pytest.skip("curl is not installed (apt-get install curl)")
    cmd = [CURL, "-s", "-S", "-D", "-", "--max-time", "10", *args, url]
    if auth:
        cmd[1:1] = ["-u", f"{USER}:{PASSWORD}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition("\n\n")      # text mode: CRLF read as \n
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, json.loads(body) if body.strip() else {}


def patch(url: str, body: str, *args: str) -> tuple[int, dict, dict]:
    return curl(url, "-X", "PATCH", "-H", "Content-Type: application/json", "--data-raw",
                body, *args)


def messages(doc: dict) -> list[tuple[str, str]]:
    return [(m["MessageId"], m["Message"]) for m in doc["error"]["@Message.ExtendedInfo"]]

