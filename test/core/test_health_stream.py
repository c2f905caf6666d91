"""HealthStream: the live graph's messages as per-second HealthFrame rows."""
from __future__ import annotations

import numpy as np
import pytest

from rackpower_nodes.core.health.stream import HealthStream, HealthStreamError

NAMES = ("srv01", "tor-a", "stor-1")
KINDS = ("server", "switch", "storage")
T0 = 1_700_000_000.0          # a whole Unix second


def _stream(**kw) -> HealthStream:
    return HealthStream(NAMES, KINDS, **kw)


def test_one_second_of_samples_gives_its_moments():
    s = _stream()
    rng = np.random.default_rng(1)
    amps = rng.uniform(0.5, 1.5, size=(2, 100))
    # channel order differs from the component order; an unknown channel is ignored
    s.push_samples(T0, 0.01, ["stor-1", "nobody"], amps, [230.0, 110.0])
    assert s.pop(T0 + 1.4) is None                 # not complete until late_s has passed
    frame = s.pop(T0 + 1.5)
    assert frame is not None and len(frame) == 1 and frame.t_unix[0] == T0
    w = amps[0] * 230.0
    c = frame.column("stor-1")
    assert frame.board_mean_w[0, c] == pytest.approx(w.mean())
    assert frame.board_std_w[0, c] == pytest.approx(w.std(), rel=1e-6)
    assert frame.board_min_w[0, c] == pytest.approx(w.min())
    assert frame.board_max_w[0, c] == pytest.approx(w.max())
    # components without a sample are unknown, not zero
    for name in ("srv01", "tor-a"):
        assert np.isnan(frame.board_mean_w[0, frame.column(name)])
    assert np.isnan(frame.app_rate).all() and np.isnan(frame.ref_w).all()
    assert s.pop(T0 + 10) is None                  # forgotten once popped


def test_batches_across_a_second_boundary_merge_per_second():
    s = _stream(late_s=0.0)
    w = np.arange(300, dtype=float)                 # 3 s at 100 Hz, one channel
    for k in range(0, 300, 20):                     # 0.2 s batches
        s.push_samples(T0 + 0.5 + k * 0.01, 0.01, ["srv01"], (w[k:k + 20] / 230.0)[None],
                       [230.0])
    frame = s.pop(T0 + 10)
    assert list(frame.t_unix) == [T0, T0 + 1, T0 + 2, T0 + 3]
    times = T0 + 0.5 + np.arange(300) * 0.01
    for r, sec in enumerate(frame.t_unix):
        sel = w[np.floor(times + 1e-9) == sec]
        assert frame.board_mean_w[r, 0] == pytest.approx(sel.mean(), abs=1e-6)
        assert frame.board_max_w[r, 0] == pytest.approx(sel.max(), abs=1e-6)


def test_a_second_without_samples_is_absent_and_late_samples_are_dropped():
    s = _stream(late_s=0.2)
    one = np.ones((1, 10))
    s.push_samples(T0, 0.1, ["srv01"], one, [230.0])
    s.push_samples(T0 + 3, 0.1, ["srv01"], one, [230.0])
    frame = s.pop(T0 + 4.2)
    assert list(frame.t_unix) == [T0, T0 + 3]       # seconds 1 and 2: a gap, not zeros
    s.push_samples(T0 + 2, 0.1, ["srv01"], one, [230.0])     # too late
    assert s.late_dropped == 10 and s.pending() == 0
    s.push_samples(T0 + 4, 0.1, ["srv01"], one, [230.0])     # on time
    assert list(s.pop(T0 + 6).t_unix) == [T0 + 4]


def test_telemetry_is_held_and_expires():
    s = _stream(late_s=0.0, telemetry_hold_s=2.0)
    s.push_telemetry(T0 + 0.3, {"srv01": (0.4, 1e6, 2e6, True), "stor-1": (0.9, 5, 6, False),
                                "elsewhere": (1.0, 1, 1, True)})
    for k in range(5):
        s.push_samples(T0 + k, 0.5, ["srv01", "stor-1"], np.ones((2, 2)), [230.0, 230.0])
    frame = s.pop(T0 + 5)
    c = frame.column("srv01")
    # held for the seconds ending within 2 s of the poll (seconds 0 and 1), then unknown
    assert list(frame.util[:, c][:2]) == [0.4, 0.4] and np.isnan(frame.util[2:, c]).all()
    assert frame.disk_bps[0, c] == 1e6 and frame.net_bps[0, c] == 2e6
    assert np.isnan(frame.util[:, frame.column("stor-1")]).all()     # host down: unknown


def test_telemetry_newer_than_the_second_is_not_used():
    s = _stream(late_s=1.0)
    s.push_samples(T0, 0.5, ["srv01"], np.ones((1, 2)), [230.0])
    s.push_telemetry(T0 + 1.5, {"srv01": (0.7, 0, 0, True)})
    frame = s.pop(T0 + 2.0)
    assert np.isnan(frame.util[0, 0])


def test_jobs_say_running_for_hosts_and_nothing_for_switches():
    s = _stream(late_s=0.0, jobs_hold_s=5.0)
    s.push_jobs(T0, ["stor-1"])
    s.push_samples(T0, 0.5, list(NAMES), np.ones((3, 2)), [230.0] * 3)
    s.push_samples(T0 + 9, 0.5, list(NAMES), np.ones((3, 2)), [230.0] * 3)
    frame = s.pop(T0 + 10)
    first = frame.job_running[0]
    assert first[frame.column("stor-1")] == 1.0 and first[frame.column("srv01")] == 0.0
    assert np.isnan(first[frame.column("tor-a")])
    assert np.isnan(frame.job_running[1]).all()     # the snapshot is 10 s old: unknown


def test_reference_readings_are_averaged_per_second():
    s = _stream(late_s=0.0)
    s.push_samples(T0, 0.5, ["srv01"], np.ones((1, 2)), [230.0])
    s.push_reference(T0 + 0.2, {"srv01": 200.0, "tor-a": float("nan")})
    s.push_reference(T0 + 0.7, {"srv01": 210.0})
    s.push_reference(T0 + 5.0, {"srv01": 1.0})      # no board samples that second: no row
    frame = s.pop(T0 + 7)
    assert list(frame.t_unix) == [T0]
    assert frame.ref_w[0, 0] == pytest.approx(205.0)
    assert np.isnan(frame.ref_w[0, 1])


def test_psu_readings_are_in_the_second_they_were_read_and_nan_between():
    """As the simulator's frames have them: one reading per poll, not held between polls."""
    s = _stream(late_s=0.0)
    for k in range(25):
        s.push_samples(T0 + k, 0.5, ["srv01", "tor-a"], np.ones((2, 2)), [230.0, 230.0])
    s.push_psu(T0 + 3.2, {"srv01": (120.0, 110.0), "nobody": (1.0, 1.0)})
    s.push_psu(T0 + 13.1, {"srv01": (121.0, 111.0), "tor-a": (300.0, 280.0)})
    s.push_psu(T0 + 13.7, {"srv01": (123.0, 113.0), "tor-a": (float("nan"), 1.0)})
    frame = s.pop(T0 + 30)
    i, j = frame.column("srv01"), frame.column("tor-a")
    assert np.flatnonzero(np.isfinite(frame.psu_in_w[:, i])).tolist() == [3, 13]
    assert frame.psu_in_w[3, i] == 120.0 and frame.psu_out_w[3, i] == 110.0
    assert frame.psu_in_w[13, i] == 122.0 and frame.psu_out_w[13, i] == 112.0   # the mean
    assert np.flatnonzero(np.isfinite(frame.psu_out_w[:, j])).tolist() == [13]
    assert frame.psu_out_w[13, j] == 280.0
    assert np.isnan(frame.psu_in_w[:, frame.column("stor-1")]).all()
    s.push_psu(T0 + 20.5, {"srv01": (1.0, 1.0)})      # a second already judged: dropped
    assert s.late_dropped == 1


def test_last_sample_time_per_component():
    s = _stream()
    s.push_samples(T0, 0.1, ["srv01"], np.ones((1, 5)), [230.0])
    assert s.last_sample_unix[0] == pytest.approx(T0 + 0.4)
    assert np.isnan(s.last_sample_unix[1:]).all()


@pytest.mark.parametrize("args, word", [
    (dict(current_a=np.ones((2, 3)), voltage_v=[230.0]), "current_a"),
    (dict(current_a=np.ones(3), voltage_v=[230.0]), "current_a"),
    (dict(current_a=np.ones((1, 3)), voltage_v=[230.0], period_s=0.0), "period_s"),
])
def test_bad_batches_are_refused_naming_the_argument(args, word):
    kw = dict(t0_unix=T0, period_s=0.1, channel_ids=["srv01"]) | args
    with pytest.raises(HealthStreamError, match=word):
        _stream().push_samples(**kw)


def test_names_and_kinds_must_match():
    with pytest.raises(HealthStreamError, match="kinds"):
        HealthStream(["a", "b"], ["server"])
