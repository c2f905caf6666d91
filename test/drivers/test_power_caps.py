"""Server power caps: the actuator's configuration, and the PDU link with BMC targets (caps
written within the budget beside a metering PDU, whole watts, the dead band, failures, foreign
limits, read-back schedules). The `pdu_actuator` node capping servers through simulated BMCs is
in test_power_caps_node.py."""
from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.devices import (
    LOOPBACK_TIMEOUT_S, MONITOR_MAP, PASSWORD, USER, curl_patch, foreign_write, sim_bmc)
from helpers.power_caps import _limits
from helpers.rack import NAMES

from rackpower_nodes.core.actuator_config import actuator_config_from_params
from rackpower_nodes.core.params import ConfigError, flatten_parameters
from rackpower_nodes.core.pdu_map import RegisterMap
from rackpower_nodes.drivers.bmc import RedfishPowerCap
from rackpower_nodes.drivers.pdu import open_pdu
from rackpower_nodes.drivers.pdu_link import PduLink, PduTarget, float32_floor
from rackpower_nodes.sim.bmc import SimBmcServer
from rackpower_nodes.sim.pdu import PduModel, SimPduServer


def _cap(server: SimBmcServer, name: str, **kwargs) -> RedfishPowerCap:
    return RedfishPowerCap(server.chassis_url(name), username=USER, password=PASSWORD,
                           timeout_s=1.0, **kwargs)


# -- configuration ---------------------------------------------------------------------------
def _params(**over) -> dict:
    p = {"components": {"names": NAMES, "pdu": ["p"] * 4, "outlet": [1, 2, 3, 4],
                        "floor_w": [50.0] * 4, "ceiling_w": [400.0] * 4},
         "pdus": {"names": ["p"], "urls": ["tcp://127.0.0.1:5020"], "maps": ["rackpower_sim"]},
         "budget": {"breaker_a": 20.0, "voltage_v": 230.0, "derating": 0.8}}
    p["components"].update(over)
    return flatten_parameters(p)


def test_power_cap_urls_are_checked_and_default_to_none():
    assert actuator_config_from_params(_params()).cap_urls == ("",) * 4
    url = "https://10.0.0.5/redfish/v1/Chassis/1"
    cfg = actuator_config_from_params(_params(power_cap_url=[url, "", "", ""]))
    assert cfg.cap_urls == (url, "", "", "") and cfg.power_caps.api == "auto"
    with pytest.raises(ConfigError) as e:
        actuator_config_from_params(_params(power_cap_url=["10.0.0.5", url, url, ""]))
    text = str(e.value)
    assert "components.power_cap_url[0] = '10.0.0.5' (a1)" in text
    assert "components.power_cap_url[2]" in text and "already the power cap of a2" in text
    # the driver's own rule: a sub-resource or credentials in the URL are refused at start
    for bad in (url + "/Power", "https://root@10.0.0.5/redfish/v1/Chassis/1"):
        with pytest.raises(ConfigError, match=r"components.power_cap_url\[1\]"):
            actuator_config_from_params(_params(power_cap_url=["", bad, "", ""]))
    with pytest.raises(ConfigError, match=r"components.power_cap_url = .*has 1 values"):
        actuator_config_from_params(_params(power_cap_url=[url]))


def test_the_bmc_password_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    cfg = actuator_config_from_params(_params()).power_caps
    monkeypatch.delenv(cfg.password_env, raising=False)
    assert cfg.password() == ""
    secret = tmp_path / "bmc.secret"
    secret.write_text("s3cret\n")
    raw = _params()
    raw["power_caps.password_file"] = str(secret)
    cfg = actuator_config_from_params(raw).power_caps
    assert cfg.password() == "s3cret"
    monkeypatch.setenv(cfg.password_env, "from-env")
    assert cfg.password() == "from-env"
    monkeypatch.delenv(cfg.password_env)
    raw["power_caps.password_file"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="power_caps.password_file = .*missing"):
        actuator_config_from_params(raw).power_caps.password()


# -- the link with BMC targets ----------------------------------------------------------------
@pytest.fixture
def bmc():
    server = sim_bmc().start()
    yield server
    server.stop()


def _bmc_link(server: SimBmcServer, budget: float = 1000.0, dead_band: float = 0.0,
              pdu: SimPduServer | None = None, resolution: float = 0.0) -> PduLink:
    targets = []
    if pdu is not None:          # a metering PDU listed first: it must not undo the BMCs
        targets.append(PduTarget("p", open_pdu(pdu.url, RegisterMap.from_mapping(MONITOR_MAP),
                                               timeout_s=LOOPBACK_TIMEOUT_S),
                                 np.array([1, 2, 3, 4]), np.arange(4)))
    targets += [PduTarget(f"bmc:{n}", _cap(server, n), np.array([1]), np.array([i]),
                          min_change_w=dead_band, resolution_w=resolution, kind="bmc")
                for i, n in enumerate(NAMES)]
    link = PduLink(targets, 4, budget, np.full(4, 400.0), retry_s=0.1)
    assert link.connect_all() == []
    return link


def test_bmc_caps_are_written_within_the_budget_beside_a_metering_pdu(bmc):
    pdu = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 10_000.0)).start()
    try:
        link = _bmc_link(bmc, pdu=pdu)
        for want in ([250.0, 250.0, 250.0, 250.0], [100.0, 400.0, 300.0, 200.0]):
            assert link.write_now(np.array(want))
            np.testing.assert_array_equal(_limits(bmc), float32_floor(np.array(want)))
            assert link.in_force_w.sum() <= 1000.0
        assert link.last_written
        np.testing.assert_array_equal(pdu.model.allocation_w[:4], 2300.0)   # never written
        kinds = {p["name"]: p["kind"] for p in link.status().pdus}
        assert kinds == {"p": "pdu", **{f"bmc:{n}": "bmc" for n in NAMES}}
        link.close()
    finally:
        pdu.stop()


def test_a_limit_below_the_bmcs_minimum_is_counted_as_held(bmc):
    link = _bmc_link(bmc)
    assert link.write_now(np.array([200.0, 200.0, 200.0, 200.0]))
    assert not link.write_now(np.array([10.0, 200.0, 200.0, 200.0]))    # a1: min 40 W
    assert bmc.limit_w("a1") == 40.0 and link.in_force_w[0] == 40.0
    assert "bmc:a1" in link.status().pdus[0]["last_error"]
    link.close()


def test_whole_watts_are_written_rounded_down_and_counted(bmc):
    link = _bmc_link(bmc, budget=800.0, resolution=1.0)
    assert link.write_now(np.array([200.7, 199.2, 200.0, 199.99]))
    np.testing.assert_array_equal(_limits(bmc), [200.0, 199.0, 200.0, 199.0])
    np.testing.assert_array_equal(link.in_force_w, [200.0, 199.0, 200.0, 199.0])
    # less than a watt from what is held: nothing to write (it would round to the same)
    assert link.write_now(np.array([200.9, 199.5, 200.0, 199.0]))
    np.testing.assert_array_equal(_limits(bmc), [200.0, 199.0, 200.0, 199.0])
    link.close()


def test_the_dead_band_skips_small_changes_and_keeps_the_budget(bmc):
    link = _bmc_link(bmc, budget=800.0, dead_band=5.0)
    assert link.write_now(np.array([200.0, 200.0, 200.0, 200.0]))
    # a1 down by 3 W, a2 up by 3 W: neither written; a1's larger value still counts
    assert link.write_now(np.array([197.0, 203.0, 200.0, 200.0]))
    np.testing.assert_array_equal(_limits(bmc), [200.0] * 4)
    assert link.in_force_w.sum() <= 800.0
    assert link.write_now(np.array([180.0, 220.0, 200.0, 200.0]))
    np.testing.assert_array_equal(_limits(bmc), [180.0, 220.0, 200.0, 200.0])
    # a split filling the budget: a2's 3 W shrink is skipped, so a1 cannot grow all of its
    # 10 W; written exactly (the static split on the way out), it lands whole
    split = np.array([190.0, 217.0, 193.0, 200.0])
    assert not link.write_now(split)
    np.testing.assert_array_equal(_limits(bmc), [187.0, 220.0, 193.0, 200.0])
    assert link.write_now(split, exact=True)
    np.testing.assert_array_equal(_limits(bmc), split)
    link.close()


def test_a_bmc_that_stops_answering_holds_back_growth_and_is_read_back(bmc):
    link = _bmc_link(bmc)
    assert link.write_now(np.array([250.0, 250.0, 250.0, 250.0]))
    port = bmc.port
    bmc.stop()
    # b1 cannot shrink: the others may grow only into what is left of the budget
    assert not link.write_now(np.array([300.0, 300.0, 100.0, 250.0]))
    ok, reason = link.health()
    assert not ok and "bmc:" in reason
    assert link.in_force_w.sum() <= 1000.0
    bmc.start()                     # the BMC reboots: limits kept, sessions forgotten
    assert bmc.port == port
    assert link.write_now(np.array([300.0, 300.0, 100.0, 250.0]))
    assert link.health()[0]
    np.testing.assert_array_equal(_limits(bmc), [300.0, 300.0, 100.0, 250.0])
    link.close()


def test_a_foreign_bmc_limit_is_found_by_read_back_and_corrected(bmc):
    link = _bmc_link(bmc, resolution=1.0)
    want = np.array([200.0, 200.0, 200.0, 200.0])
    assert link.write_now(want)
    status, _ = curl_patch(bmc.chassis_url("a2") + "/Power",
                            {"PowerControl": [{"PowerLimit": {"LimitInWatts": 480}}]})
    assert status == 200 and bmc.limit_w("a2") == 480.0
    assert link.verify_now() == ["BMC bmc:a2 outlet 1: expected 200 W, found 480 W "
                                 "(read-back)"]
    np.testing.assert_array_equal(link.held_w(), [200.0, 480.0, 200.0, 200.0])
    bmc.reboot("b1")                               # b1's BMC restarts: no limit at all
    link.start()
    end = time.monotonic() + 20.0                  # guard only
    while not np.array_equal(_limits(bmc), want) and time.monotonic() < end:
        time.sleep(0.02)
    np.testing.assert_array_equal(_limits(bmc), want)
    st = {p["name"]: p for p in link.status().pdus}
    assert st["bmc:a2"]["corrections"] == 1 and st["bmc:b1"]["reconnects"] == 1
    assert "expected 200 W, found inf W" in st["bmc:b1"]["last_foreign_value"]
    link.close()


def test_held_w_of_a_component_behind_an_outlet_and_a_bmc_is_the_smaller(bmc):
    pdu = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 10_000.0)).start()
    try:
        targets = [PduTarget("p", open_pdu(pdu.url, "rackpower_sim", timeout_s=LOOPBACK_TIMEOUT_S),
                             np.array([1]), np.array([0])),
                   PduTarget("bmc:a1", _cap(bmc, "a1"), np.array([1]), np.array([0]),
                             resolution_w=1.0, kind="bmc")]
        link = PduLink(targets, 1, 1000.0, np.full(1, 400.0), retry_s=0.1)
        assert link.connect_all() == []
        np.testing.assert_array_equal(link.held_w(), [2300.0])      # min(2300, no limit)
        assert link.write_now(np.array([300.5]))
        np.testing.assert_array_equal(link.held_w(), [300.0])       # min(300.5, 300)
        # a foreign raise of the outlet register: held to 300 W by the BMC, but the budget
        # counts the larger value until the register is corrected (the BMC's read-back
        # does not hide it)
        foreign_write(pdu, 1, 2300.0)
        assert link.verify_now() == ["PDU p outlet 1: expected 300.5 W, found 2300 W "
                                     "(read-back)"]
        assert link.in_force_w[0] == 2300.0 and link.held_w()[0] == 300.0
        assert link.write_now(np.array([300.5]))
        assert pdu.model.allocation_w[0] == np.float32(300.5) and bmc.limit_w("a1") == 300.0
        # a foreign cut of the BMC limit: the smaller is held; raised back beside the
        # register, which the budget already counted
        bmc.reset_limits()
        curl_patch(bmc.chassis_url("a1") + "/EnvironmentMetrics",
                    {"PowerLimitWatts": {"SetPoint": 100}})
        assert link.verify_now() and link.held_w()[0] == 100.0
        assert link.write_now(np.array([300.5]))
        assert bmc.limit_w("a1") == 300.0 and link.held_w()[0] == 300.0
        bmc.stop()
        link.verify_now()
        assert np.isnan(link.held_w()).all()       # the BMC's half is unknown: so is it
        link.close()
    finally:
        pdu.stop()
        bmc.start()


def test_each_bmc_is_read_back_on_its_own_schedule(bmc):
    """A BMC is read back every `verify_s`: the link's (0.5 s by default) unless the target
    sets its own. One with a 30 s period is left alone while one at the default is read back
    again and again; the first notices its BMC gone only when read."""
    quiet = PduTarget("bmc:a1", _cap(bmc, "a1"), np.array([1]), np.array([0]),
                      verify_s=30.0, kind="bmc")
    busy = PduTarget("bmc:a2", _cap(bmc, "a2"), np.array([1]), np.array([1]), kind="bmc")
    link = PduLink([quiet, busy], 2, 1000.0, np.full(2, 400.0), retry_s=60.0)
    assert link.verify_s == 0.5
    assert link.connect_all() == []
    assert quiet.readbacks == busy.readbacks == 1           # on connecting
    link.start()                         # nothing to write: only read-backs reach the BMC
    end = time.monotonic() + 30.0        # guard only
    while busy.readbacks < 4 and time.monotonic() < end:
        time.sleep(0.05)
    assert busy.readbacks >= 4 and quiet.readbacks == 1, (busy.readbacks, quiet.readbacks)
    link.stop()
    bmc.stop()
    assert link.health()[0]              # not read since: not known to be gone
    assert link.verify_now() == []
    ok, reason = link.health()
    assert not ok and "bmc:a1" in reason and "bmc:a2" in reason
    assert np.isnan(link.held_w()).all()     # unknown now, not assumed
    link.close()
    bmc.start()
