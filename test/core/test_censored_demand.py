"""Censored demand: a component held at its allocation shows the cap, not its demand.

A bag as the recorder writes it (power_samples and power_allocation of one rack): srv01 draws
100 W, then wants 300 W from t = 20 s while its allocation in force holds it at 150 W until
t = 30 s, when 400 W is in force. The bag reader marks exactly the held steps as censored and
the window builder keeps every window whose horizon touches them out of the training data;
without the allocations in the bag nothing is marked (the same windows are then all kept).
"""
from __future__ import annotations

import numpy as np
import pytest

from rackpower_nodes.core.forecast.features import WindowSpec, build_windows, window_ends
from rackpower_nodes.core.forecast.series import pinned
from rackpower_nodes.sources.bags import from_bag, message_typestore

T0 = 1_760_000_000.0
RATE = 100.0                    # samples per second
BATCH = 10                      # samples per PowerSamples message (0.1 s)
SECONDS = 60
HELD_FROM_S, FREED_AT_S = 20.0, 30.0
SPEC = WindowSpec(step_s=0.1, history_steps=20, horizon_steps=20, coarse=(10,))


def _demand(t: np.ndarray) -> np.ndarray:
    return np.where(t < T0 + HELD_FROM_S, 100.0, 300.0)


def _allocation(t: float) -> float:
    if t < T0 + HELD_FROM_S:
        return 150.0
    return 150.0 if t < T0 + FREED_AT_S else 400.0


def _write(path, with_allocations: bool) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = message_typestore()
    T = store.types

    def header(t: float):
        ns = round(t * 1e9)
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
            frame_id="board")

    out = []
    for b in range(int(SECONDS * RATE / BATCH)):
        t0 = T0 + b * BATCH / RATE
        times = t0 + np.arange(BATCH) / RATE
        power = np.minimum(_demand(times), [_allocation(x) for x in times])   # the PDU holds it
        cur = (power / 230.0).astype(np.float32)
        samples = T["rackpower/msg/PowerSamples"](
            header=header(t0), sample_period_s=1.0 / RATE, sample_count=BATCH,
            first_sequence=b * BATCH, first_board_time_us=b * 100_000, channel_ids=["srv01"],
            current_a=cur, voltage_v=np.full(1, 230.0, np.float32),
            mean_power_w=np.array([power.mean()], np.float32),
            peak_power_w=np.array([power.max()], np.float32), total_power_w=float(power.mean()),
            frames_lost=0)
        out.append((round(t0 * 1e9), 0, store.serialize_cdr(samples, samples.__msgtype__)))
        if with_allocations:
            w = np.array([_allocation(t0)], np.float32)
            nan = np.full(1, np.nan, np.float32)
            alloc = T["rackpower/msg/PowerAllocation"](
                header=header(t0), mode="reactive", mode_reason="", budget_w=3680.0,
                breaker_w=4600.0, window_s=1.0, channel_ids=["srv01"], allocated_w=w,
                forecast_w=nan, measured_w=nan, floor_w=np.full(1, 50.0, np.float32),
                ceiling_w=np.full(1, 800.0, np.float32), held_w=w,
                priority=np.ones(1, np.uint8), total_allocated_w=float(w[0]),
                total_measured_w=0.0, slack_w=0.0, forecast_model="", pdu_written=True)
            out.append((round(t0 * 1e9) + 1, 1, store.serialize_cdr(alloc, alloc.__msgtype__)))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = [writer.add_connection("/rack_07/power_samples", "rackpower/msg/PowerSamples",
                                       typestore=store),
                 writer.add_connection("/rack_07/power_allocation",
                                       "rackpower/msg/PowerAllocation", typestore=store)]
        for t_ns, c, data in sorted(out, key=lambda m: m[0]):
            writer.write(conns[c], t_ns, data)


def _held_steps() -> np.ndarray:
    k = np.arange(int(SECONDS / SPEC.step_s))
    return (k >= HELD_FROM_S / SPEC.step_s) & (k < FREED_AT_S / SPEC.step_s)


def test_pinned_samples_are_those_within_two_percent_of_the_allocation():
    assert pinned([150.0, 147.0, 146.9, 153.0, 153.1, 80.0, 150.0],
                  [150.0, 150.0, 150.0, 150.0, 150.0, 150.0, np.nan]).tolist() == [
        True, True, False, True, False, False, False]


def test_steps_held_at_the_allocation_are_marked_and_kept_out_of_training(tmp_path):
    _write(tmp_path / "bag", with_allocations=True)
    (series,) = from_bag(tmp_path / "bag", step_s=SPEC.step_s, namespace="rack_07",
                         specs={"srv01": (50.0, 800.0)})
    held = _held_steps()
    np.testing.assert_array_equal(series.censored, held)
    np.testing.assert_allclose(series.power_w[held], 150.0)          # the cap, not 300 W

    ws = build_windows([series], SPEC)
    ends = window_ends(len(series), SPEC)
    horizon = ends[:, None] + np.arange(1, SPEC.horizon_steps + 1)
    clean = ends[~held[horizon].any(axis=1)]
    assert 0 < len(clean) < len(ends)
    np.testing.assert_allclose(ws.t_unix, series.t_unix[clean])     # the same windows


def test_without_allocations_in_the_bag_nothing_is_censored(tmp_path):
    _write(tmp_path / "bag", with_allocations=False)
    (series,) = from_bag(tmp_path / "bag", step_s=SPEC.step_s, namespace="rack_07",
                         specs={"srv01": (50.0, 800.0)})
    assert not series.censored.any()
    assert len(build_windows([series], SPEC)) == len(window_ends(len(series), SPEC))


@pytest.mark.parametrize("censored", [[True] * 3, np.zeros((2, 2), bool)])
def test_a_censored_mask_of_the_wrong_length_is_refused(censored):
    from rackpower_nodes.core.forecast.series import ComponentSeries, DatasetError

    with pytest.raises(DatasetError, match="censored has"):
        ComponentSeries("srv01", T0, 0.1, np.ones(5), np.full((5, 6), np.nan), 50.0, 800.0,
                        censored=censored)
