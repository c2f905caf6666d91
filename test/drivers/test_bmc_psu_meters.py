"""The PSUs' own meters through a BMC, read only: `parse_power_supplies` (sums, each PSU kept,
every problem named), `RedfishPsuMeter` against the simulated BMC (its PowerSupplies, HTTP
errors, timeouts, a chassis without PSUs, never a write; a PATCH of a PSU-only Power resource
refused by the BMC) and `PsuMeterReader` (new readings handed over once, per-BMC status)."""
from __future__ import annotations

import time

import pytest
from helpers.redfish import PASSWORD, USER, _direct, curl  # noqa: F401 - fixture

from rackpower_nodes.core.health_monitor_config import PsuMeterSettings
from rackpower_nodes.drivers.bmc import BmcError
from rackpower_nodes.drivers.bmc.psu_meter import RedfishPsuMeter
from rackpower_nodes.drivers.bmc.psu_readings import parse_power_supplies
from rackpower_nodes.drivers.psu_meter_reader import PsuMeterReader
from rackpower_nodes.sim.bmc import SimBmcServer


def _psu(i: int, p_in, p_out, **extra) -> dict:
    return {"MemberId": str(i), "Name": f"PSU {i + 1}", "PowerInputWatts": p_in,
            "PowerOutputWatts": p_out, "Status": {"State": "Enabled", "Health": "OK"}} | extra


def test_readings_are_summed_over_the_psus_and_each_kept():
    r = parse_power_supplies({"PowerSupplies": [_psu(0, 120.5, 110.0), _psu(1, 119.5, 108)]})
    assert (r.input_w, r.output_w) == (240.0, 218.0)
    assert r.psus == (("0", 120.5, 110.0), ("1", 119.5, 108.0))
    older = {"MemberId": "0", "PowerInputWatts": 50, "LastPowerOutputWatts": 45.5}
    assert parse_power_supplies({"PowerSupplies": [older]}).output_w == 45.5


@pytest.mark.parametrize("doc, named", [
    ({"PowerControl": []}, "no PowerSupplies in the Power resource"),
    ({"PowerSupplies": {}}, "PowerSupplies is {}, expected an array"),
    ({"PowerSupplies": []}, "PowerSupplies is empty"),
    ({"PowerSupplies": [{"MemberId": "0", "PowerOutputWatts": 10}]},
     "PowerSupplies[0] has no PowerInputWatts"),
    ({"PowerSupplies": [{"MemberId": "0", "PowerInputWatts": 10}]},
     "PowerSupplies[0] has no PowerOutputWatts or LastPowerOutputWatts"),
    ({"PowerSupplies": [_psu(0, None, 10)]},
     "PowerSupplies[0] (PSU 1).PowerInputWatts is null"),
    ({"PowerSupplies": [_psu(0, "120", 10)]},
     "PowerSupplies[0] (PSU 1).PowerInputWatts is '120', expected a number of W"),
    ({"PowerSupplies": [_psu(0, 120, True)]},
     "PowerSupplies[0] (PSU 1).PowerOutputWatts is True, expected a number of W"),
    ({"PowerSupplies": [_psu(0, -3, 10)]},
     "PowerSupplies[0] (PSU 1).PowerInputWatts is -3, expected a finite number >= 0 W"),
    ({"PowerSupplies": [_psu(0, 100, 90), _psu(1, None, None, Status={"State": "Absent"})]},
     "PowerSupplies[1] (PSU 2) is absent (Status.State Absent)"),
    ({"PowerSupplies": [7]}, "PowerSupplies[0] is 7, expected an object"),
])
def test_each_bad_document_is_refused_naming_what_is_wrong(doc, named):
    with pytest.raises(ValueError) as err:
        parse_power_supplies(doc)
    assert named in str(err.value)


def test_every_problem_is_named_not_only_the_first():
    doc = {"PowerSupplies": [_psu(0, None, 90), _psu(1, 100, "x")]}
    with pytest.raises(ValueError) as err:
        parse_power_supplies(doc)
    assert "PowerSupplies[0] (PSU 1).PowerInputWatts is null" in str(err.value)
    assert "PowerSupplies[1] (PSU 2).PowerOutputWatts is 'x'" in str(err.value)


@pytest.fixture
def bmc():
    srv = SimBmcServer(["em", "pc", "bare"], api={"em": "environment_metrics",
                                                  "pc": "power_control",
                                                  "bare": "environment_metrics"},
                       psus={"em": (800.0, 800.0), "pc": (550.0,)}).start()
    srv.set_psu_readings("em", (101.0, 99.0), (95.0, 93.0))
    yield srv
    srv.stop()


def _meter(srv, chassis, **kw) -> RedfishPsuMeter:
    return RedfishPsuMeter(srv.chassis_url(chassis), **({"username": USER, "password": PASSWORD,
                                                         "timeout_s": 2.0} | kw))


def test_the_bmcs_psus_are_read_and_nothing_is_written(bmc):
    for auth in ("session", "basic"):
        meter = _meter(bmc, "em", auth=auth)
        r = meter.read()
        assert (r.input_w, r.output_w) == (200.0, 188.0)
        assert [p[0] for p in r.psus] == ["0", "1"]
        bmc.set_psu_readings("em", (110.0, 110.0), (100.0, 100.0))
        assert meter.read().input_w == 220.0                        # a fresh GET each read
        bmc.set_psu_readings("em", (101.0, 99.0), (95.0, 93.0))
        meter.close()
    assert bmc.requests("PATCH") == 0 and bmc.requests("PUT") == 0
    assert bmc.requests("GET", "/redfish/v1/Chassis/em/Power") == 4


def test_a_psu_only_power_resource_refuses_a_limit(bmc):
    status, _, body = curl(bmc.chassis_url("em") + "/Power", "-X", "PATCH", "-H",
                           "Content-Type: application/json", "--data-raw",
                           '{"PowerControl": [{"PowerLimit": {"LimitInWatts": 300}}]}')
    assert status == 400 and "PowerControl" in body["error"]["message"]
    assert bmc.limit_w("em") is None


def test_what_the_bmc_gets_wrong_is_named(bmc):
    meter = _meter(bmc, "pc")              # its PSUs not read by the BMC yet: null readings
    with pytest.raises(BmcError, match=r"GET /redfish/v1/Chassis/pc/Power: PowerSupplies\[0\] "
                       r"\(PSU 1\).PowerInputWatts is null"):
        meter.read()
    assert meter.connected                 # the BMC answered: the session is kept
    with pytest.raises(BmcError, match="links no Power resource"):
        _meter(bmc, "bare").read()
    meter = _meter(bmc, "em")
    meter.read()
    bmc.fail_requests(1, 503)
    with pytest.raises(BmcError, match="HTTP 503"):
        meter.read()
    assert not meter.connected and meter.read().input_w == 200.0      # logged in afresh
    bmc.set_delay(0.6)
    with pytest.raises(BmcError, match="timeout: no answer within 0.2 s"):
        _meter(bmc, "em", timeout_s=0.2).read()
    bmc.set_delay(0)
    port = bmc.port
    bmc.stop()
    with pytest.raises(BmcError, match=f"BMC http://127.0.0.1:{port}/redfish/v1/Chassis/em"):
        _meter(bmc, "em").read()


def _settings(srv, stale_after_s=35.0) -> PsuMeterSettings:
    return PsuMeterSettings(("srv01", "srv02"), (srv.chassis_url("em"), srv.chassis_url("pc")),
                            period_s=0.05, timeout_s=2.0, stale_after_s=stale_after_s,
                            username=USER)


def test_the_reader_hands_over_each_new_reading_once_and_says_per_bmc(bmc):
    got: list[tuple[float, dict]] = []
    reader = PsuMeterReader(_settings(bmc), PASSWORD, lambda t, w: got.append((t, w)))
    reader.read_once()
    reader.read_once()                      # the BMC has not refreshed: nothing new
    assert len(got) == 1 and got[0][1] == {"srv01": (200.0, 188.0)}
    assert abs(got[0][0] - time.time()) < 5
    (status,) = reader.bmc_status()
    assert status.bmc == bmc.url and status.level == "warn"
    assert status.message.startswith("srv02: BMC ") and "PowerInputWatts is null" in \
        status.message
    assert status.chassis["srv01"].startswith("ok (")
    bmc.set_psu_readings("pc", (300.0,), (280.0,))
    bmc.set_psu_readings("em", (102.0, 99.0), (95.0, 93.0))
    reader.read_once()
    assert got[-1][1] == {"srv01": (201.0, 188.0), "srv02": (300.0, 280.0)}
    assert reader.bmc_status()[0].level == "ok"
    assert reader.chassis_state("srv02").startswith("ok (") and reader.chassis_state("x") == ""
    later = reader.bmc_status(now=time.time() + 60)[0]
    assert later.level == "stale" and "no PSU reading of srv01, srv02 for" in later.message
    reader.stop()


def test_the_reader_thread_reads_every_period_and_says_a_dead_bmc_stale(bmc):
    got: list[dict] = []
    reader = PsuMeterReader(_settings(bmc, stale_after_s=1.0), PASSWORD,
                            lambda t, w: got.append(w))
    bmc.stop()
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while reader.bmc_status()[0].level != "stale" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = reader.bmc_status()[0]
        assert status.level == "stale" and "srv01: BMC http://127.0.0.1" in status.message
        assert not got
    finally:
        reader.stop()


def test_a_bmc_that_times_out_costs_one_timeout_a_round_not_one_per_chassis(bmc):
    settings = PsuMeterSettings(("a", "b", "c"), tuple(bmc.chassis_url(c) for c in
                                                       ("em", "pc", "bare")),
                                period_s=0.05, timeout_s=0.2, username=USER)
    reader = PsuMeterReader(settings, PASSWORD, lambda t, w: None)
    bmc.set_delay(2.0)
    before = bmc.requests()
    reader.read_once()
    assert bmc.requests() == before + 1       # the round ended with the BMC's first timeout
    (status,) = reader.bmc_status()
    assert "a: BMC" in status.message and "timeout" in status.message
    assert "b: BMC" in status.message and "not read this round" in status.message
    bmc.set_delay(0)
    reader.stop()
