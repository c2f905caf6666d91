"""The health_monitor node's configuration: its own keys, and health.* handed to HealthConfig."""
from __future__ import annotations

import pytest

from rackpower_nodes.core.health.config import HealthConfig
from rackpower_nodes.core.health_monitor_config import (
    health_monitor_config_from_params, health_parameter_specs)
from rackpower_nodes.core.params import ConfigError

BASE = {"components.names": ["srv01", "tor-a"], "components.kinds": ["server", "switch"]}


def test_defaults_and_health_settings_reach_the_health_config():
    cfg = health_monitor_config_from_params({**BASE, "health.cusum_k": 0.7})
    assert cfg.names == ("srv01", "tor-a") and cfg.kinds == ("server", "switch")
    assert cfg.model_path == "" and cfg.period_s == 1.0 and cfg.refresh_s == 5.0
    assert isinstance(cfg.health, HealthConfig)
    assert cfg.health.cusum_k == 0.7
    assert cfg.health.arl0_weeks == HealthConfig().arl0_weeks


def test_every_scalar_health_setting_is_a_declared_parameter_with_its_default():
    specs = {s.name: s.default for s in health_parameter_specs()}
    for key, value in HealthConfig().as_dict().items():
        if isinstance(value, (int, float)):
            assert specs[f"health.{key}"] == value


@pytest.mark.parametrize("values, named", [
    ({"health.cusum_kk": 0.7}, "health.cusum_kk: not a parameter of health_monitor; did you "
                               "mean 'health.cusum_k'?"),
    ({"health.arl0_weeks": -1.0}, "health.arl0_weeks"),
    ({"components.kinds": ["server", "router"]}, "components.kinds[1] = 'router'"),
    ({"components.kinds": ["server"]}, "components.kinds = ['server']: has 1 values"),
    ({"health.model_path": "/nonexistent/model"}, "health.model_path = '/nonexistent/model'"),
    ({"publish.period_s": 0.0}, "publish.period_s = 0.0"),
    ({"publish.refresh_s": -1.0}, "publish.refresh_s = -1.0"),
])
def test_bad_values_are_named(values, named):
    with pytest.raises(ConfigError) as info:
        health_monitor_config_from_params({**BASE, **values})
    assert named in str(info.value)


REFERENCE = {"reference.enabled": True, "reference.pdus.names": ["pdu-a"],
             "reference.pdus.urls": ["tcp://127.0.0.1:5020"],
             "reference.pdus.maps": ["rackpower_sim"],
             "reference.components.pdu": ["pdu-a", ""], "reference.components.outlet": [3, 0]}


def test_reference_meters_are_the_wired_outlets():
    cfg = health_monitor_config_from_params({**BASE, **REFERENCE})
    (pdu,) = cfg.reference_pdus
    assert (pdu.name, pdu.unit_id, pdu.components, pdu.outlets) == ("pdu-a", 1, ("srv01",), (3,))
    assert health_monitor_config_from_params(BASE).reference_pdus == ()    # off by default


@pytest.mark.parametrize("change, named", [
    ({"reference.pdus.urls": ["http://pdu"]}, "reference.pdus.urls[0] = 'http://pdu'"),
    ({"reference.pdus.maps": ["nomap"]}, "reference.pdus.maps[0] = 'nomap'"),
    ({"reference.components.pdu": ["pdu-z", ""]}, "reference.components.pdu[0] = 'pdu-z'"),
    ({"reference.components.outlet": [3]}, "reference.components.outlet = [3]: has 1 values"),
    ({"reference.pdus.names": []}, "reference.pdus.names = []"),
])
def test_bad_reference_settings_are_named(change, named):
    with pytest.raises(ConfigError) as info:
        health_monitor_config_from_params({**BASE, **REFERENCE, **change})
    assert named in str(info.value)


def test_nested_health_settings_reach_their_section():
    nested = [s.name for s in health_parameter_specs() if s.name.count(".") > 1]
    if not nested:
        pytest.skip("HealthConfig has no nested settings")
    key = nested[0]
    section, leaf = key.split(".")[1:]
    default = next(s.default for s in health_parameter_specs() if s.name == key)
    value = default * 2 if not isinstance(default, bool) else not default
    cfg = health_monitor_config_from_params({**BASE, key: value})
    assert getattr(getattr(cfg.health, section), leaf) == value


def test_no_components_is_an_error():
    with pytest.raises(ConfigError, match=r"components.names = \[\]"):
        health_monitor_config_from_params({})
