"""The Redfish power-cap client against the simulator's BMC on loopback, with Debian's curl as
an independent client reading back what the client wrote (both schemas, clamping, If-Match,
failures and reconnection, arguments). The simulated BMC's own checks and HTTPS are in
test_bmc_server.py; the BMC, the clients and curl come from test/helpers/redfish.py."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers.redfish import (  # fixtures among them: pytest finds them in this module
    APIS, PASSWORD, POWER_W, SESSIONS, USER, _direct, bmc, caps, curl, limit_calls, messages,
    patch)

from rackpower_nodes.drivers.bmc import BmcError, RedfishPowerCap, open_power_cap
from rackpower_nodes.drivers.pdu import PduCapabilityError, PduClient, PduError
from rackpower_nodes.sim.bmc import SimBmcServer


@pytest.fixture
def strict_bmc():
    """A BMC that insists on If-Match."""
    with SimBmcServer(["em", "pc"], api={"pc": "power_control"}, allowable_max_w=900.0,
                      require_if_match=True) as srv:
        yield srv


# -- both schemas ---------------------------------------------------------------------------
@pytest.mark.parametrize("chassis, api, resource", [
    ("em", "environment_metrics", "EnvironmentMetrics"),
    ("pc", "power_control", "Power"),
])
def test_reads_and_writes_the_power_limit(bmc, caps, limit_calls, chassis, api, resource):
    cap = caps(bmc, chassis)
    assert isinstance(cap, PduClient) and cap.connected and cap.can_write_allocations
    assert cap.register_map is None and cap.api == api
    r = cap.read_outlets([1])
    np.testing.assert_array_equal(r.outlets, [1])
    np.testing.assert_array_equal(r.power_w, [POWER_W[chassis]])
    assert np.isnan(r.current_a).all() and np.isnan(r.voltage_v).all() and r.state is None
    np.testing.assert_array_equal(cap.read_allocations([1]), [np.inf])      # no limit yet

    got = cap.write_allocations([1], [450.0])
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, [450.0])
    np.testing.assert_array_equal(cap.read_allocations([1]), [450.0])
    assert bmc.limit_w(chassis) == 450.0
    assert limit_calls == [(chassis, 450.0)]

    status, headers, doc = curl(f"{bmc.chassis_url(chassis)}/{resource}")
    assert status == 200 and headers["odata-version"] == "4.0" and "etag" in headers
    if resource == "EnvironmentMetrics":
        assert doc["PowerLimitWatts"]["SetPoint"] == 450.0
        assert doc["PowerLimitWatts"]["ControlMode"] == "Automatic"
        assert doc["PowerWatts"]["Reading"] == POWER_W[chassis]
    else:
        control = doc["PowerControl"][0]
        assert control["PowerLimit"]["LimitInWatts"] == 450.0
        assert control["PowerConsumedWatts"] == POWER_W[chassis]


def test_auto_prefers_environment_metrics_and_either_schema_can_be_forced(bmc, caps):
    assert caps(bmc, "both").api == "environment_metrics"
    legacy = caps(bmc, "both", api="power_control")
    assert legacy.api == "power_control"
    legacy.write_allocations([1], [321.0])
    _, _, doc = curl(f"{bmc.chassis_url('both')}/EnvironmentMetrics")
    assert doc["PowerLimitWatts"]["SetPoint"] == 321.0            # one limit, two views
    # EnvironmentMetrics with the reading only beside the legacy limit: auto falls back
    _, _, chassis = curl(bmc.chassis_url("mix"))
    assert "EnvironmentMetrics" in chassis and "Power" in chassis
    mixed = caps(bmc, "mix")
    assert mixed.api == "power_control"
    np.testing.assert_array_equal(mixed.write_allocations([1], [222.0]), [222.0])
    _, _, doc = curl(f"{bmc.chassis_url('mix')}/EnvironmentMetrics")
    assert "PowerLimitWatts" not in doc and doc["PowerWatts"]["Reading"] == POWER_W["mix"]
    _, _, chassis = curl(bmc.chassis_url("pc"))
    assert "Power" in chassis and "EnvironmentMetrics" not in chassis


def test_limit_disabled_on_the_bmc_reads_as_inf(bmc, caps, limit_calls):
    cap = caps(bmc, "em")
    cap.write_allocations([1], [500.0])
    status, _, _ = patch(f"{bmc.chassis_url('em')}/EnvironmentMetrics",
                         '{"PowerLimitWatts": {"ControlMode": "Disabled"}}')
    assert status == 200 and bmc.limit_w("em") is None
    np.testing.assert_array_equal(cap.read_allocations([1]), [np.inf])
    assert limit_calls == [("em", 500.0), ("em", None)]
    np.testing.assert_array_equal(cap.write_allocations([1], [400.0]), [400.0])   # on again
    _, _, doc = curl(f"{bmc.chassis_url('em')}/EnvironmentMetrics")
    assert doc["PowerLimitWatts"]["ControlMode"] == "Automatic"


# -- clamping ---------------------------------------------------------------------------------
def test_writes_are_clamped_to_the_allowable_range(bmc, caps):
    cap = caps(bmc, "em")
    assert (cap.allowable_min_w, cap.allowable_max_w) == (150.0, 800.0)
    np.testing.assert_array_equal(cap.write_allocations([1], [20.0]), [150.0])
    assert bmc.limit_w("em") == 150.0
    np.testing.assert_array_equal(cap.write_allocations([1], [5000.0]), [800.0])
    assert bmc.limit_w("em") == 800.0


def test_constructor_range_narrows_the_bmc_range(bmc, caps):
    narrow = caps(bmc, "em", min_w=200.0, max_w=600.0)
    assert (narrow.allowable_min_w, narrow.allowable_max_w) == (200.0, 600.0)
    np.testing.assert_array_equal(narrow.write_allocations([1], [160.0]), [200.0])
    np.testing.assert_array_equal(narrow.write_allocations([1], [700.0]), [600.0])
    assert bmc.limit_w("em") == 600.0
    wide = caps(bmc, "em", min_w=10.0, max_w=5000.0)      # the BMC would refuse beyond its own
    assert (wide.allowable_min_w, wide.allowable_max_w) == (150.0, 800.0)
    np.testing.assert_array_equal(wide.write_allocations([1], [10.0]), [150.0])


def test_legacy_range_comes_from_the_constructor_and_the_capacity(bmc, caps):
    cap = caps(bmc, "pc")
    assert (cap.allowable_min_w, cap.allowable_max_w) == (0.0, 800.0)    # PowerCapacityWatts
    np.testing.assert_array_equal(cap.write_allocations([1], [1200.0]), [800.0])
    bounded = caps(bmc, "pc", min_w=120.0, max_w=500.0)
    assert (bounded.allowable_min_w, bounded.allowable_max_w) == (120.0, 500.0)
    np.testing.assert_array_equal(bounded.write_allocations([1], [50.0]), [120.0])
    np.testing.assert_array_equal(bounded.write_allocations([1], [900.0]), [500.0])
    assert bmc.limit_w("pc") == 500.0


def test_constructor_range_outside_the_bmc_range_is_a_capability_error(bmc, caps):
    cap = caps(bmc, "em", connect=False, min_w=900.0)
    with pytest.raises(PduCapabilityError, match="900"):
        cap.connect()
    assert not cap.connected


# -- If-Match -----------------------------------------------------------------------------------
@pytest.mark.parametrize("chassis, resource", [("em", "EnvironmentMetrics"), ("pc", "Power")])
def test_writes_carry_if_match_where_the_bmc_insists(strict_bmc, caps, chassis, resource):
    url = f"{strict_bmc.chassis_url(chassis)}/{resource}"
    body = ('{"PowerLimitWatts": {"SetPoint": 300}}' if chassis == "em"
            else '{"PowerControl": [{"PowerLimit": {"LimitInWatts": 300}}]}')
    status, _, doc = patch(url, body)
    assert status == 428 and "If-Match" in messages(doc)[0][1]
    cap = caps(strict_bmc, chassis)
    np.testing.assert_array_equal(cap.write_allocations([1], [310.0]), [310.0])
    np.testing.assert_array_equal(cap.write_allocations([1], [320.0]), [320.0])
    assert strict_bmc.limit_w(chassis) == 320.0


def test_stale_etag_is_refreshed_and_the_write_retried_once(strict_bmc, caps, caplog):
    url = f"{strict_bmc.chassis_url('em')}/EnvironmentMetrics"
    first, second = caps(strict_bmc, "em"), caps(strict_bmc, "em")
    _, headers, _ = curl(url)
    old_etag = headers["etag"]
    first.write_allocations([1], [300.0])                  # `second` now holds a stale ETag
    _, headers, _ = curl(url)
    assert headers["etag"] != old_etag                     # every PATCH changes it
    status, _, doc = patch(url, '{"PowerLimitWatts": {"SetPoint": 350}}', "-H",
                           f"If-Match: {old_etag}")
    assert status == 412 and messages(doc)[0][0].endswith("PreconditionFailed")

    with caplog.at_level(logging.DEBUG, logger="rackpower_nodes.sim.bmc"):
        np.testing.assert_array_equal(second.write_allocations([1], [400.0]), [400.0])
    assert strict_bmc.limit_w("em") == 400.0 and second.connected
    served = [(m.split('"')[1].split()[0], m.split('"')[2].split()[0])
              for m in caplog.messages if "/EnvironmentMetrics HTTP/1.1" in m]
    assert served == [("PATCH", "412"), ("GET", "200"), ("PATCH", "200")]


# -- failures -------------------------------------------------------------------------------------
def test_wrong_password_is_a_credentials_error(bmc, caps):
    for auth in ("session", "basic"):
        cap = caps(bmc, "em", connect=False, password="wrong", auth=auth)
        with pytest.raises(BmcError, match="credentials") as err:
            cap.connect()
        assert bmc.chassis_url("em") in str(err.value) and "401" in str(err.value)
        assert not cap.connected


def test_unknown_chassis_is_a_404(bmc, caps):
    cap = caps(bmc, "nope", connect=False)
    with pytest.raises(BmcError, match=r"GET /redfish/v1/Chassis/nope: HTTP 404") as err:
        cap.connect()
    assert bmc.chassis_url("nope") in str(err.value) and not cap.connected
    assert isinstance(err.value, PduError)


def test_chassis_without_a_power_limit_is_a_capability_error(bmc, caps):
    cap = caps(bmc, "none", connect=False)
    with pytest.raises(PduCapabilityError, match="no power limit"):
        cap.connect()
    assert not cap.connected
    forced = caps(bmc, "em", connect=False, api="power_control")
    with pytest.raises(PduCapabilityError, match="links no Power"):
        forced.connect()
    _, _, doc = curl(f"{bmc.url}{SESSIONS}")
    assert doc["Members"] == []                            # both logged out again


def test_server_down_then_rebooted(bmc, caps):
    cap = caps(bmc, "em")
    cap.write_allocations([1], [420.0])
    bmc.stop()
    with pytest.raises(BmcError, match="refused") as err:
        cap.read_outlets([1])
    assert bmc.chassis_url("em") in str(err.value) and not cap.connected
    with pytest.raises(BmcError, match="not connected"):
        cap.read_allocations([1])
    with pytest.raises(BmcError, match="GET /redfish/v1/"):
        cap.connect()
    cap.close()

    bmc.start()                                            # same port
    cap.connect()
    bmc.stop()
    bmc.start()                                            # reboot: sessions forgotten
    with pytest.raises(BmcError, match="HTTP 401") as err:
        cap.read_allocations([1])
    assert "connect() again" in str(err.value) and not cap.connected
    cap.connect()
    np.testing.assert_array_equal(cap.read_allocations([1]), [420.0])   # the limit survived


def test_reset_limits(bmc, caps, limit_calls):
    cap = caps(bmc, "pc")
    cap.write_allocations([1], [333.0])
    bmc.reset_limits()
    assert bmc.limit_w("pc") is None and limit_calls[-1] == ("pc", None)
    np.testing.assert_array_equal(cap.read_allocations([1]), [np.inf])


def test_reboot_of_one_chassis_restores_its_default_and_ends_its_sessions(bmc, caps,
                                                                         limit_calls):
    em, pc = caps(bmc, "em"), caps(bmc, "pc")
    em.write_allocations([1], [420.0])
    pc.write_allocations([1], [300.0])
    bmc.reboot("em")
    assert bmc.boots == 1 and bmc.limit_w("em") is None and limit_calls[-1] == ("em", None)
    with pytest.raises(BmcError, match="HTTP 401"):       # its session is gone
        em.read_allocations([1])
    np.testing.assert_array_equal(pc.read_allocations([1]), [300.0])   # the other's is not
    em.connect()
    np.testing.assert_array_equal(em.read_allocations([1]), [np.inf])   # no limit: default
    with pytest.raises(KeyError, match="nope"):
        bmc.reboot("nope")


def test_reboot_of_every_chassis_drops_sessions_and_connections(bmc, caps):
    cap = caps(bmc, "pc")
    cap.write_allocations([1], [300.0])
    bmc.reboot()
    assert all(bmc.limit_w(c) is None for c in APIS)
    with pytest.raises(BmcError):
        cap.read_allocations([1])
    assert not cap.connected
    cap.connect()
    np.testing.assert_array_equal(cap.read_allocations([1]), [np.inf])


@pytest.mark.parametrize("chassis, body, found", [
    ("em", '{"PowerLimitWatts": {"SetPoint": 777}}', 777.0),
    ("pc", '{"PowerControl": [{"PowerLimit": {"LimitInWatts": 650}}]}', 650.0),
])
def test_a_foreign_patch_by_curl_takes_effect(bmc, caps, chassis, body, found):
    """Anyone holding the credentials may change a limit, as on a real BMC: rackpower's
    client sees the new value on its next read."""
    cap = caps(bmc, chassis)
    cap.write_allocations([1], [400.0])
    resource = "EnvironmentMetrics" if chassis == "em" else "Power"
    status, _, _ = patch(f"{bmc.chassis_url(chassis)}/{resource}", body)
    assert status == 200 and bmc.limit_w(chassis) == found
    np.testing.assert_array_equal(cap.read_allocations([1]), [found])


def test_injected_error_then_reconnect(bmc, caps):
    cap = caps(bmc, "em")
    bmc.fail_requests(1, 503)
    with pytest.raises(BmcError, match="HTTP 503: Simulated failure") as err:
        cap.read_outlets([1])
    assert "GET /redfish/v1/Chassis/em/EnvironmentMetrics" in str(err.value)
    assert not cap.connected
    cap.connect()
    np.testing.assert_array_equal(cap.read_outlets([1]).power_w, [POWER_W["em"]])
    _, _, doc = curl(f"{bmc.url}{SESSIONS}")
    assert len(doc["Members"]) == 1                        # the failed session was logged out


def test_slow_bmc_times_out_after_one_try(bmc, caps):
    cap = caps(bmc, "em", timeout_s=0.3)
    path = "/redfish/v1/Chassis/em/EnvironmentMetrics"
    before = bmc.requests("GET", path)
    bmc.set_delay(2.0)
    with pytest.raises(BmcError, match="timeout"):
        cap.read_outlets([1])
    assert bmc.requests("GET", path) == before + 1         # one try: the library's retries off
    assert not cap.connected
    with pytest.raises(BmcError, match=r"GET /redfish/v1/: timeout"):
        cap.connect()
    bmc.set_delay(0.0)
    cap.connect()
    assert cap.connected


def test_missing_or_failing_reading(caps):
    def power(chassis: str) -> float:
        if chassis == "broken":
            raise RuntimeError("meter offline")
        return float("nan")

    with SimBmcServer(["dark", "broken"], power_w=power) as srv:
        cap = caps(srv, "dark")
        assert np.isnan(cap.read_outlets([1]).power_w).all()          # Reading: null
        cap = caps(srv, "broken", connect=False)
        with pytest.raises(BmcError, match="HTTP 500: .*meter offline"):
            cap.connect()


def test_basic_auth(bmc, caps):
    cap = caps(bmc, "pc", auth="basic")
    np.testing.assert_array_equal(cap.write_allocations([1], [275.0]), [275.0])
    np.testing.assert_array_equal(cap.read_allocations([1]), [275.0])
    _, _, doc = curl(f"{bmc.url}{SESSIONS}")
    assert doc["Members"] == []                            # no session was created


def test_close_logs_out_and_is_idempotent(bmc, caps):
    cap = caps(bmc, "em")
    _, _, doc = curl(f"{bmc.url}{SESSIONS}")
    assert len(doc["Members"]) == 1
    cap.connect()                                          # a fresh session, the old one ended
    _, _, doc = curl(f"{bmc.url}{SESSIONS}")
    assert len(doc["Members"]) == 1
    cap.close()
    cap.close()
    _, _, doc = curl(f"{bmc.url}{SESSIONS}")
    assert doc["Members"] == [] and not cap.connected


# -- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "tcp://127.0.0.1:502", "http://127.0.0.1/redfish/v1/Chassis", "http://127.0.0.1/redfish/v1/",
    "http://127.0.0.1/redfish/v1/Chassis/1/Power", "ftp://h/redfish/v1/Chassis/1",
    "http://h/redfish/v1/Chassis/1?x=1", "http:///redfish/v1/Chassis/1",
    "http://h:99999/redfish/v1/Chassis/1",
])
def test_rejects_urls_other_than_a_chassis(url):
    with pytest.raises(ValueError, match="Chassis/<id>") as err:
        RedfishPowerCap(url)
    assert repr(url) in str(err.value)


def test_argument_checks(bmc, caps):
    url = bmc.chassis_url("em")
    for kwargs in ({"api": "modbus"}, {"auth": "digest"}, {"timeout_s": 0},
                   {"min_w": -1.0}, {"min_w": 500.0, "max_w": 400.0}):
        with pytest.raises(ValueError, match=url):
            RedfishPowerCap(url, **kwargs)
    cap = open_power_cap(url, username=USER, password=PASSWORD)
    assert url in repr(cap) and PASSWORD not in repr(cap)
    with pytest.raises(BmcError, match="not connected"):
        cap.write_allocations([1], [300.0])
    cap.connect()
    for outlets, watts in (([2], [300.0]), ([1], [-1.0]), ([1], [np.nan]), ([1], [np.inf]),
                           ([1], [1.0, 2.0])):
        with pytest.raises(ValueError):
            cap.write_allocations(outlets, watts)
    with pytest.raises(ValueError, match="outlet 1"):
        cap.read_outlets([0])
    with pytest.raises(PduCapabilityError):
        cap.set_outlet(1, False)
    assert cap.read_allocations([]).size == 0 and cap.connected
    assert bmc.limit_w("em") is None                       # nothing was written


def test_proxies_come_from_the_environment_once_at_log_in(bmc, caps, monkeypatch):
    """HTTP(S)_PROXY and NO_PROXY are honoured as requests does, but read at log-in only, not
    at every request."""
    from helpers.rack import free_port

    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    dead = f"http://127.0.0.1:{free_port()}"      # a proxy that is down
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("http_proxy", dead)
    with pytest.raises(BmcError):                  # through the proxy: nobody answers
        caps(bmc, "em")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    cap = caps(bmc, "em")                          # the BMC bypasses it
    monkeypatch.delenv("no_proxy")                 # read again, it would send to the proxy
    np.testing.assert_array_equal(cap.write_allocations([1], [275.0]), [275.0])
    np.testing.assert_array_equal(cap.read_allocations([1]), [275.0])
