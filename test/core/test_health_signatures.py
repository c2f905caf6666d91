"""Naming the cause of a learned alarm (`name_cause`) from hand-made evidence windows."""
from __future__ import annotations

import numpy as np
import pytest

from rackpower_nodes.core.health.signatures import Evidence, name_cause

N = 240
RNG = np.random.default_rng(9)
#: a server's expected draw over 4 h, W: load going up and down
LOAD = 150.0 + 60.0 * np.sin(np.arange(N) / 9.0) + RNG.normal(0, 5, N)


def ev(kind="server", res=None, util_up=0.0, ripple=0.0, **scores) -> Evidence:
    res = RNG.normal(0, 1.0, N) if res is None else res
    base = {"power_up": 0.0, "util": 0.0, "ripple": 0.0}
    if kind == "storage":
        base["bursts"] = 0.0
    base.update(scores)
    return Evidence(kind, res, LOAD.copy(), np.full(N, util_up) + RNG.normal(0, 0.02, N),
                    np.full(N, ripple) + RNG.normal(0, 0.3, N), base)


def test_bursts_on_storage_are_disk_retries():
    cause, evidence = name_cause(ev("storage", bursts=1.2, power_up=0.4))
    assert cause == "disk_retries"
    assert evidence["score_bursts"] == 1.2


def test_unexplained_utilisation_is_a_runaway():
    assert name_cause(ev(util_up=0.3, **{"util": 1.1, "power_up": 0.2}))[0] == "runaway_process"
    # util up with power consistent with it, the power detector a little ahead
    assert name_cause(ev(util_up=0.2, **{"util": 0.8, "power_up": 1.0}))[0] == "runaway_process"


def test_proportional_residual_without_ripple_is_psu_efficiency():
    res = 0.06 * LOAD + RNG.normal(0, 0.5, N)
    cause, evidence = name_cause(ev(res=res, power_up=1.3))
    assert cause == "psu_efficiency"
    assert evidence["proportionality"] == pytest.approx(1.0, abs=0.3)
    assert evidence["shift_frac"] == pytest.approx(0.06, abs=0.01)


def test_offset_with_ripple_is_fan_wear():
    res = np.full(N, 12.0) + RNG.normal(0, 0.5, N)
    assert name_cause(ev(res=res, ripple=2.5, power_up=1.2))[0] == "fan_wear"


def test_offset_that_ignores_the_load_is_fan_wear_even_without_ripple():
    res = np.full(N, 12.0) + RNG.normal(0, 0.5, N)
    cause, evidence = name_cause(ev(res=res, power_up=1.2))
    assert cause == "fan_wear"
    assert abs(evidence["proportionality"]) < 0.3


def test_a_drop_is_a_sensor_offset():
    res = np.full(N, -9.0) + RNG.normal(0, 0.5, N)
    assert name_cause(ev(res=res, power_down=1.1))[0] == "sensor_offset"


def test_board_up_but_meter_flat_is_a_sensor_fault():
    """Below the physical checks' tolerance: the board's residual is up, the independent
    meter's is not, so only the measurement moved; gain when the gap follows the load."""
    flat = RNG.normal(0, 0.5, N)
    offset = ev(res=np.full(N, 4.0) + RNG.normal(0, 0.5, N), power_up=1.1)
    gain = ev(res=0.03 * LOAD + RNG.normal(0, 0.3, N), power_up=1.1)
    for e, want in ((offset, "sensor_offset"), (gain, "sensor_gain")):
        e = Evidence(e.kind, e.power_res_w, e.expected_w, e.util_res, e.ripple_z, e.scores,
                     flat)
        cause, evidence = name_cause(e)
        assert cause == want, evidence
        assert abs(evidence["ref_shift_w"]) < 0.5
    # the meter moved with the board: the component really draws more
    real = ev(res=0.03 * LOAD + RNG.normal(0, 0.3, N), power_up=1.1)
    real = Evidence(real.kind, real.power_res_w, real.expected_w, real.util_res,
                    real.ripple_z, real.scores, real.power_res_w + RNG.normal(0, 0.3, N))
    assert name_cause(real)[0] == "psu_efficiency"


def test_the_psus_own_meters_decide_psu_against_fan():
    # proportional residual, which alone would be named psu_efficiency: the PSU detector,
    # running on the PSUs' own input and output, stays quiet, so the draw passes through
    # the PSU (a DC-side load): fan wear
    res = 0.06 * LOAD + RNG.normal(0, 0.5, N)
    quiet = ev(res=res, power_up=1.3, psu=0.1)
    quiet = Evidence(**{**quiet.__dict__, "psu_extra": np.full(N, 0.001)})
    assert name_cause(quiet)[0] == "fan_wear"
    # an additive offset, which alone would be named fan_wear, with the PSU detector up
    res = np.full(N, 12.0) + RNG.normal(0, 0.5, N)
    lossy = ev(res=res, power_up=0.9, psu=1.1)
    lossy = Evidence(**{**lossy.__dict__, "psu_extra": np.full(N, 0.03)})
    cause, evidence = name_cause(lossy)
    assert cause == "psu_efficiency" and evidence["psu_extra_frac"] == pytest.approx(0.03)


def test_the_utilisation_level_detector_names_a_runaway():
    assert name_cause(ev(util_up=0.02, util_level=1.0, power_up=0.3))[0] == "runaway_process"
