"""The simulated Redfish BMC on its own, probed by Debian's curl (refused patches, paths,
methods, authentication, sessions, lifecycle), and HTTPS as real BMCs serve it, with the
power-cap client verifying the certificate or saying that it does not. The BMC, the clients
and curl come from test/helpers/redfish.py."""
from __future__ import annotations

import json
import ssl
import subprocess

import numpy as np
import pytest
from helpers.redfish import (  # fixtures among them: pytest finds them in this module
    APIS, PASSWORD, SESSIONS, USER, _direct, bmc, caps, curl, limit_calls, messages, patch)

from rackpower_nodes.drivers.bmc import BmcError
from rackpower_nodes.sim.bmc import SimBmcServer


# -- the simulated BMC on its own ----------------------------------------------------------------
@pytest.mark.parametrize("chassis, body, status, message_id, named", [
    ("em", '{"PowerLimitWatts": {"SetPoint": 900}}', 400, "PropertyValueOutOfRange",
     "PowerLimitWatts/SetPoint"),
    ("em", '{"PowerLimitWatts": {"SetPoint": 100}}', 400, "PropertyValueOutOfRange",
     "PowerLimitWatts/SetPoint"),
    ("em", '{"PowerLimitWatts": {"SetPoint": -5}}', 400, "PropertyValueTypeError",
     "PowerLimitWatts/SetPoint"),
    ("em", '{"PowerLimitWatts": {"SetPoint": "450"}}', 400, "PropertyValueTypeError",
     "PowerLimitWatts/SetPoint"),
    ("em", '{"PowerLimitWatts": {"SetPoint": NaN}}', 400, "MalformedJSON", "JSON"),
    ("em", '{"PowerLimitWatts": {"SetPoint": 450, "Foo": 1}}', 400, "PropertyUnknown",
     "PowerLimitWatts/Foo"),
    ("em", '{"PowerLimitWatts": {"AllowableMax": 2000}}', 400, "PropertyNotWritable",
     "PowerLimitWatts/AllowableMax"),
    ("em", '{"PowerLimitWatts": {"ControlMode": "Fast"}}', 400, "PropertyValueNotInList",
     "PowerLimitWatts/ControlMode"),
    ("em", '{"Bar": {}}', 400, "PropertyUnknown", "Bar"),
    ("em", '{"PowerLimitWatts": {"SetPoint": 450}', 400, "MalformedJSON", "malformed"),
    ("pc", '{"PowerControl": [{"PowerLimit": {"LimitInWatts": 801}}]}', 400,
     "PropertyValueOutOfRange", "PowerControl/0/PowerLimit/LimitInWatts"),
    ("pc", '{"PowerControl": [{"PowerLimit": {"LimitInWatts": -1}}]}', 400,
     "PropertyValueTypeError", "LimitInWatts"),
    ("pc", '{"PowerControl": [{"PowerLimit": {"LimitInWatts": true}}]}', 400,
     "PropertyValueTypeError", "LimitInWatts"),
    ("pc", '{"PowerControl": [{"PowerLimit": {"LimitInWatts": 400, "Extra": 1}}]}', 400,
     "PropertyUnknown", "PowerControl/0/PowerLimit/Extra"),
    ("pc", '{"PowerControl": [{"PowerConsumedWatts": 1}]}', 400, "PropertyNotWritable",
     "PowerControl/0/PowerConsumedWatts"),
    ("pc", '{"PowerControl": [{}, {}]}', 400, "PropertyValueTypeError", "PowerControl"),
    ("none", '{"PowerLimitWatts": {"SetPoint": 300}}', 400, "PropertyUnknown",
     "PowerLimitWatts"),
    ("mix", '{"PowerLimitWatts": {"SetPoint": 300}}', 400, "PropertyUnknown",
     "PowerLimitWatts"),
])
def test_server_refuses_bad_patches(bmc, limit_calls, chassis, body, status, message_id, named):
    resource = "Power" if chassis == "pc" else "EnvironmentMetrics"
    got, headers, doc = patch(f"{bmc.chassis_url(chassis)}/{resource}", body)
    assert got == status and headers["content-type"].startswith("application/json")
    (mid, message), = messages(doc)
    assert mid == f"Base.1.8.{message_id}" and named in message
    assert doc["error"]["message"] == message
    assert bmc.limit_w(chassis) is None and limit_calls == []


def test_server_paths_methods_and_authentication(bmc):
    assert curl(f"{bmc.url}/redfish", auth=False)[2] == {"v1": "/redfish/v1/"}
    status, _, root = curl(f"{bmc.url}/redfish/v1/", auth=False)
    assert status == 200 and root["Links"]["Sessions"]["@odata.id"] == SESSIONS
    status, headers, doc = curl(bmc.chassis_url("em"), auth=False)
    assert status == 401 and "NoValidSession" in messages(doc)[0][0]
    assert curl(bmc.chassis_url("em"), "-u", "admin:bad", auth=False)[0] == 401
    _, _, chassis = curl(f"{bmc.url}/redfish/v1/Chassis")
    assert [m["@odata.id"].rsplit("/", 1)[1] for m in chassis["Members"]] == list(APIS)
    assert curl(bmc.chassis_url("nope"))[0] == 404
    assert curl(f"{bmc.chassis_url('em')}/Power")[0] == 404       # not offered there
    assert curl(f"{bmc.chassis_url('pc')}/EnvironmentMetrics")[0] == 404
    assert curl(f"{bmc.url}/redfish/v1/Systems")[0] == 404
    status, headers, _ = curl(bmc.chassis_url("em"), "-X", "DELETE")
    assert status == 405 and headers["allow"] == "GET"
    with pytest.raises(KeyError, match="nope"):
        bmc.limit_w("nope")


def test_server_sessions(bmc):
    status, headers, doc = curl(f"{bmc.url}{SESSIONS}", "-X", "POST", "-H",
                                "Content-Type: application/json", "--data-raw",
                                json.dumps({"UserName": USER, "Password": PASSWORD}),
                                auth=False)
    assert status == 201 and headers["location"] == doc["@odata.id"]
    token = ["-H", f"X-Auth-Token: {headers['x-auth-token']}"]
    assert curl(bmc.chassis_url("em"), *token, auth=False)[0] == 200
    assert curl(f"{bmc.url}{headers['location']}", "-X", "DELETE", *token, auth=False)[0] == 204
    assert curl(bmc.chassis_url("em"), *token, auth=False)[0] == 401
    status, _, _ = curl(f"{bmc.url}{SESSIONS}", "-X", "POST", "--data-raw",
                        json.dumps({"UserName": USER, "Password": "x"}), auth=False)
    assert status == 401


def test_server_lifecycle_and_arguments():
    srv = SimBmcServer(["a"])
    assert not srv.running
    with srv:
        port = srv.port
        assert srv.running and port > 0 and srv.url == f"http://127.0.0.1:{port}"
        assert srv.chassis_url("a") == f"http://127.0.0.1:{port}/redfish/v1/Chassis/a"
    assert not srv.running
    srv.stop()                                             # idempotent
    srv.start()
    assert srv.port == port
    srv.stop()
    for kwargs in ({"api": "snmp"}, {"api": {"b": "power_control"}},
                   {"allowable_min_w": 900.0, "allowable_max_w": 800.0},
                   {"allowable_max_w": float("nan")}):
        with pytest.raises(ValueError):
            SimBmcServer(["a"], **kwargs)
    for bad in ([], ["a", "a"], ["a/b"]):
        with pytest.raises(ValueError):
            SimBmcServer(bad)


# -- HTTPS, as real BMCs serve it -----------------------------------------------------------
def _self_signed(folder, name: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 made by the openssl command line."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    return _self_signed(folder, "bmc"), _self_signed(folder, "other-ca")


@pytest.fixture
def tls_bmc(certs):
    (cert, key), _ = certs
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with SimBmcServer(["em"], allowable_max_w=800.0, tls=ctx) as srv:
        yield srv


def test_https_with_the_bmcs_certificate_verified(tls_bmc, certs, caps):
    (cert, _), _ = certs
    assert tls_bmc.chassis_url("em").startswith("https://127.0.0.1:")
    cap = caps(tls_bmc, "em", cafile=cert)
    np.testing.assert_array_equal(cap.write_allocations([1], [420.0]), [420.0])
    assert tls_bmc.limit_w("em") == 420.0


def test_https_with_the_wrong_ca_is_refused_naming_the_certificate(tls_bmc, certs, caps):
    _, (other, _) = certs
    with pytest.raises(BmcError, match="(?i)certificate") as err:
        caps(tls_bmc, "em", cafile=other)
    assert tls_bmc.chassis_url("em").split("/redfish")[0] in str(err.value)
    assert tls_bmc.limit_w("em") is None


def test_https_without_a_ca_file_is_not_verified_and_says_so(tls_bmc, caps):
    from urllib3.exceptions import InsecureRequestWarning

    with pytest.warns(InsecureRequestWarning):    # BMCs mostly carry self-signed certificates
        cap = caps(tls_bmc, "em")
        np.testing.assert_array_equal(cap.write_allocations([1], [300.0]), [300.0])
