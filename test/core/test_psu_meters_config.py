"""health_monitor's psu_meters.* section: the BMC chassis read per component (the format of
pdu_actuator's components.power_cap_url), the login as its power_caps.*, and every bad key or
value named."""
from __future__ import annotations

import pytest

from rackpower_nodes.core.health_monitor_config import health_monitor_config_from_params
from rackpower_nodes.core.params import ConfigError

BASE = {"components.names": ["srv01", "srv02", "tor-a"],
        "components.kinds": ["server", "server", "switch"]}
URL = "http://127.0.0.1:5080/redfish/v1/Chassis/"
ON = {"psu_meters.enabled": True,
      "psu_meters.components.url": [URL + "srv01", URL + "srv02", ""]}


def test_off_by_default_and_the_chassis_per_component_when_on():
    assert health_monitor_config_from_params(BASE).psu_meters is None
    cfg = health_monitor_config_from_params({**BASE, **ON, "psu_meters.username": "admin",
                                             "psu_meters.auth": "basic"}).psu_meters
    assert cfg.components == ("srv01", "srv02")
    assert cfg.urls == (URL + "srv01", URL + "srv02")
    assert (cfg.period_s, cfg.timeout_s, cfg.stale_after_s) == (10.0, 1.0, 35.0)
    assert (cfg.auth, cfg.username, cfg.password_env) == ("basic", "admin",
                                                          "RACKPOWER_BMC_PASSWORD")


def test_the_password_comes_from_the_environment_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RACKPOWER_BMC_PASSWORD", "s3cret")
    cfg = health_monitor_config_from_params({**BASE, **ON}).psu_meters
    assert cfg.password() == "s3cret"
    monkeypatch.delenv("RACKPOWER_BMC_PASSWORD")
    (tmp_path / "pw").write_text("from-file\n")
    cfg = health_monitor_config_from_params({**BASE, **ON, "psu_meters.password_file":
                                             str(tmp_path / "pw")}).psu_meters
    assert cfg.password() == "from-file"
    cfg = health_monitor_config_from_params({**BASE, **ON, "psu_meters.password_file":
                                             str(tmp_path / "none")}).psu_meters
    with pytest.raises(ConfigError, match="psu_meters.password_file = .*none.*cannot read"):
        cfg.password()


@pytest.mark.parametrize("values, named", [
    ({"psu_meters.period": 5.0}, "psu_meters.period: not a parameter of health_monitor; "
                                 "did you mean 'psu_meters.period_s'?"),
    ({"psu_meters.period_s": 0.1}, "psu_meters.period_s = 0.1"),
    ({"psu_meters.timeout_s": 0.0}, "psu_meters.timeout_s = 0.0"),
    ({"psu_meters.auth": "digest"}, "psu_meters.auth = 'digest'"),
    ({"psu_meters.components.url": [URL + "srv01"]},
     "psu_meters.components.url = ['http://127.0.0.1:5080/redfish/v1/Chassis/srv01']: has 1 "
     "values, expected 3"),
    ({"psu_meters.components.url": [URL + "srv01", "http://bmc/Power", ""]},
     "psu_meters.components.url[1] = 'http://bmc/Power' (srv02): expected '' or "
     "http(s)://<bmc>/redfish/v1/Chassis/<id>"),
    ({"psu_meters.components.url": [URL + "srv01", URL + "srv01", ""]},
     "(srv02): already the chassis of srv01"),
    ({"psu_meters.components.url": ["", "", ""]}, "psu_meters.components.url: no chassis URL"),
    ({"psu_meters.stale_after_s": 5.0}, "psu_meters.stale_after_s = 5.0: below "
                                        "psu_meters.period_s = 10.0"),
])
def test_bad_keys_and_values_are_named(values, named):
    with pytest.raises(ConfigError) as err:
        health_monitor_config_from_params({**BASE, **ON, **values})
    assert named in str(err.value)
