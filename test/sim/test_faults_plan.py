"""random_faults draws realistic faults within the documented ranges, on distinct components
that can have them; parse_fault reads the command line's syntax."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from rackpower_nodes.core.health import FAULT_CLASSES, SENSOR_FAULTS
from rackpower_nodes.sim.faults import FaultSpecError
from rackpower_nodes.sim.faults.effects import ALLOWED_KINDS
from rackpower_nodes.sim.faults.plan import RANGES, parse_fault, random_faults
from rackpower_nodes.sim.rack_sim import generate, load_config, preset_config


@pytest.mark.parametrize("preset", ["office", "ai", "mixed"])
def test_drawn_faults_fit_their_components_and_ranges(preset):
    kinds = {c.name: c.kind for c in load_config(preset_config(preset)).components}
    seen = Counter()
    for seed in range(100, 140):
        faults = random_faults(preset, seed, per_run=3, start_s=3600, end_s=20 * 3600)
        assert len({f.component for f in faults}) == 3
        for f in faults:
            seen[f.kind] += 1
            r = RANGES[f.kind]
            assert kinds[f.component] in ALLOWED_KINDS[f.kind]
            assert r.magnitude[0] <= abs(f.magnitude) <= r.magnitude[1]
            assert 3600 <= f.onset_s < 20 * 3600
            assert f.growth in r.growths
            assert f.growth_s == 0 if f.growth == "step" else \
                r.growth_h[0] * 3600 <= f.growth_s <= r.growth_h[1] * 3600
            if f.kind in SENSOR_FAULTS or f.kind == "runaway_process":
                assert math.isinf(f.failure_s)
            else:
                assert f.onset_s + f.growth_s < f.failure_s
    possible = {k for k in FAULT_CLASSES if set(kinds.values()) & set(ALLOWED_KINDS[k])}
    assert set(seen) == possible
    assert random_faults(preset, 5, per_run=2) == random_faults(preset, 5, per_run=2)
    assert random_faults(preset, 5, per_run=2) != random_faults(preset, 6, per_run=2)


def test_both_signs_of_offsets_and_only_disks_get_retries():
    faults = [f for s in range(200) for f in random_faults("office", s, ["sensor_offset"])]
    assert min(f.magnitude for f in faults) < 0 < max(f.magnitude for f in faults)
    disks = random_faults("office", 1, kinds=["disk_retries"], per_run=2)
    assert sorted(f.component for f in disks) == ["stor-1", "stor-2"]
    with pytest.raises(FaultSpecError, match="no component left"):
        random_faults("office", 1, kinds=["disk_retries"], per_run=3)


def test_drawn_faults_run_in_the_simulator():
    faults = random_faults("office", 3, per_run=4, start_s=60, end_s=600)
    data = generate(0.2, seed=3, faults=faults)
    assert data.faults == tuple(faults)


@pytest.mark.parametrize(("args", "field"), [
    ({"kinds": ["bogus"]}, "kinds"), ({"per_run": 99}, "per_run"),
    ({"start_s": 10, "end_s": 5}, "start_s, end_s"),
])
def test_bad_draws_are_refused_naming_the_argument(args, field):
    with pytest.raises(FaultSpecError, match=field):
        random_faults("office", 1, **args)


def test_parse_fault():
    f = parse_fault("fan_wear:srv03:2:4:12.5")
    assert (f.kind, f.component, f.onset_s, f.growth_s, f.magnitude, f.growth) == \
        ("fan_wear", "srv03", 7200.0, 14400.0, 12.5, "linear")
    g = parse_fault("sensor_stuck:tor-a:30", unit_s=1.0)
    assert (g.onset_s, g.growth_s, g.growth) == (30.0, 0.0, "step")
    assert parse_fault("psu_efficiency:srv01:1").magnitude == pytest.approx(0.05)
    for text, field in [("fan_wear:srv01", "expected KIND"), ("fans:srv01:1", "kind 'fans'"),
                        ("fan_wear:srv01:x", "onset 'x'"), ("fan_wear:srv01:1:2:big",
                                                           "magnitude 'big'")]:
        with pytest.raises(FaultSpecError, match=field):
            parse_fault(text)
