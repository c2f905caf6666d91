"""Feeds in the live simulator: `rackpower-sim live --feeds` through its control socket. A lost
feed's PDU stops answering on its real TCP port, its single-corded switch goes dark, the
survivor carries the rest; restored, the PDU boots again with its defaults. An uncapped
survivor trips on its breaker's curve and takes the rack down. The CLI's --feeds."""
from __future__ import annotations

import json
import socket
import time

import pytest
import yaml
from helpers import REPO

from rackpower_nodes.sim.cli import _parser, main
from rackpower_nodes.sim.control import ControlServer, send_command
from rackpower_nodes.sim.live import LiveRack


BUSY_START = 1709557200.0       # 2024-03-04 13:00 UTC: simulated time 0 is the office's busy hour


def _wait(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)


def _answers(server) -> bool:
    try:
        socket.create_connection((server.host, server.port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _feeds(thermal_constant_s: float) -> dict:
    raw = yaml.safe_load((REPO / "config" / "rack_feeds.yaml").read_text())
    raw["feeds"]["thermal_constant_s"] = thermal_constant_s
    return raw


@pytest.fixture()
def live(tmp_path, request):
    rack = LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=200.0,
                    pdu_base_port=0, bmc_port=None, feeds=_feeds(request.param),
                    start_unix=BUSY_START)
    sock = tmp_path / "rack.sock"
    with rack, ControlServer(rack, sock):
        _wait(lambda: rack.feeds.rack.time_s > 0.5, "the feeds advance")
        yield rack, sock


@pytest.mark.parametrize("live", [3600.0], indirect=True)
def test_a_lost_feed_goes_down_and_comes_back(live):
    rack, sock = live
    pdu_a, pdu_b = rack.pdus["pdu-a"], rack.pdus["pdu-b"]
    assert _answers(pdu_a) and _answers(pdu_b)
    boots = pdu_a.boot_count
    answer = send_command(sock, {"cmd": "fail_feed", "feed": "A"})
    assert answer["ok"] and answer["pdus"] == ["pdu-a"] and answer["dark"] == ["tor-a"]
    assert not _answers(pdu_a) and _answers(pdu_b)
    tor_a = rack._outlet_of[rack.sim.names.index("tor-a")]
    _wait(lambda: rack.pdu_model.served_w[tor_a] == 0.0, "tor-a dark")
    _wait(lambda: send_command(sock, {"cmd": "stats"})["feeds"]["feeds"]["A"]["load_w"] == 0,
          "feed A carries nothing")
    stats = send_command(sock, {"cmd": "stats"})["feeds"]
    served = sum(rack.pdu_model.served_w)
    assert stats["down"] == ["A"] and stats["feeds"]["B"]["load_w"] > 0.5 * served
    assert stats["events"][0]["feed"] == "A" and "B" in stats["events"][0]["survivors"]
    assert rack.manifest()["feeds"]["names"] == ["A", "B"]

    refused = send_command(sock, {"cmd": "restore_feed", "feed": "B"})
    assert not refused["ok"] and "'B': it is not lost" in refused["error"]
    assert not send_command(sock, {"cmd": "fail_feed", "feed": "Z"})["ok"]
    assert send_command(sock, {"cmd": "restore_feed", "feed": "A"})["ok"]
    _wait(lambda: _answers(pdu_a), "pdu-a answers again")
    assert pdu_a.boot_count == boots + 1
    _wait(lambda: rack.pdu_model.served_w[tor_a] > 100.0, "tor-a powered again")
    assert send_command(sock, {"cmd": "stats"})["feeds"]["down"] == []


@pytest.mark.parametrize("live", [0.5], indirect=True)
def test_an_uncapped_survivor_trips_and_takes_the_rack_down(live):
    rack, sock = live
    load = rack.feeds.rack.feed_load_w.sum()
    assert load > 1.1 * 1840.0                 # more than one feed's budget: B overloads
    assert send_command(sock, {"cmd": "fail_feed", "feed": "A"})["ok"]
    _wait(lambda: send_command(sock, {"cmd": "stats"})["feeds"]["trips"] == 1, "B trips")
    stats = send_command(sock, {"cmd": "stats"})["feeds"]
    assert stats["down"] == ["A", "B"] and stats["feeds"]["B"]["trips"] == 1
    assert not _answers(rack.pdus["pdu-b"])
    _wait(lambda: sum(rack.pdu_model.served_w) == 0.0, "the rack dark")
    refused = send_command(sock, {"cmd": "restore_feed", "feed": "B"})
    assert not refused["ok"] and "tripped" in refused["error"]


def test_the_cli_runs_the_rack_on_feeds(tmp_path):
    manifest = tmp_path / "manifest.json"
    assert main(["live", "--link", str(tmp_path / "board"), "--channels", "16", "--rate",
                 "100", "--exporter-base-port", "0", "--pdu-base-port", "0", "--bmc-port",
                 "0", "--feeds", str(REPO / "config" / "rack_feeds.yaml"), "--manifest",
                 str(manifest), "--duration", "0.5"]) == 0
    feeds = json.loads(manifest.read_text())["feeds"]
    assert feeds["names"] == ["A", "B"] and feeds["pdus"] == ["pdu-a", "pdu-b"]
    assert feeds["budget_w"] == [1840.0, 1840.0] and len(feeds["split"]) == 16
    assert _parser().parse_args(["live", "--link", "/tmp/b"]).feeds is None
