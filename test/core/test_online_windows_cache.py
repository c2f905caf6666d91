"""OnlineWindows keeps each component's feature rows between windows and computes only those
it lacks: its windows must be, bit for bit, those of recomputing every row of the held history
from scratch (what it did before), whatever arrives late, out of order or not at all."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers.online_windows import FromScratch
from helpers.series import SMALL, T0

from rackpower_nodes.core.forecast import online as online_mod
from rackpower_nodes.core.forecast.features import (
    WindowSpec,
    feature_names,
    feature_rows,
)
from rackpower_nodes.core.forecast.online import OnlineWindows
from rackpower_nodes.core.schedule import Job, Recurrence, WorkloadSchedule
from rackpower_nodes.core.workload_events import JobEvent, WorkloadEvents

NAMES = ["a", "b", "c", "d"]
IDLE, TOP = [10.0, 20.0, 5.0, 40.0], [100.0, 250.0, 80.0, 300.0]
SCHEDULE = WorkloadSchedule([
    Job("short", ("a", "b"), 0.6, 4.0, Recurrence("every", period_s=15.0, phase_s=3.0)),
    Job("long", ("c",), 0.9, 9.0, Recurrence("every", period_s=25.0, phase_s=11.0))])


class Pair:
    """The cached windows and the reference, fed the same calls."""

    def __init__(self, spec=SMALL, names=NAMES, schedule=SCHEDULE, **kw):
        idle, top = IDLE[:len(names)], TOP[:len(names)]
        self.fast = OnlineWindows(spec, names, idle, top, schedule, **kw)
        self.ref = FromScratch(spec, names, idle, top, schedule, **kw)
        self.checks = self.ready = 0

    def __getattr__(self, method):
        def both(*args, **kwargs):
            getattr(self.ref, method)(*args, **kwargs)
            return getattr(self.fast, method)(*args, **kwargs)
        return both

    def check(self, t_unix: float, features: bool = True):
        got = self.fast.window(t_unix, features)
        want = self.ref.window(t_unix, features)
        for g, w, what in zip(got, want, ("x", "last", "ready", "age"), strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape, what
            assert g.tobytes() == w.tobytes(), f"{what} differs at {t_unix - T0:.3f} s"
        self.checks += 1
        self.ready += int(got[2].sum())
        return got


def samples_msg(t0, period, names, power, first_sequence, frames_lost=0):
    """A PowerSamples-like message: power (channels, samples) W as current at 1 V."""
    sec = int(t0 // 1)
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=round((t0 - sec) * 1e9))),
        channel_ids=list(names), sample_count=power.shape[1], sample_period_s=period,
        current_a=power.reshape(-1), voltage_v=np.ones(len(names)),
        first_sequence=first_sequence, frames_lost=frames_lost)


def random_snapshot(rng, stamp: float) -> WorkloadEvents:
    jobs = []
    for k in range(int(rng.integers(0, 4))):
        hosts = tuple(h for h in NAMES if rng.random() < 0.4) or ("a",)
        running = rng.random() < 0.5
        start = stamp + (-rng.uniform(0, 90) if running else rng.uniform(-5, 90))
        if not running and rng.random() < 0.1:
            start = float("nan")                   # pending without an expected start
        jobs.append(JobEvent(f"j{k}@{stamp:.2f}", "job", hosts,
                             "running" if running else "pending", start,
                             float(rng.uniform(1, 60)), float(rng.uniform(0.05, 1.0)),
                             str(rng.choice(["", "cpu", "gpu-train"]))))
    return WorkloadEvents(stamp, tuple(jobs), "test")


def drive(pair: Pair, seed: int, seconds: float, snapshots: bool = True,
          late_telemetry: bool = True, breaks: float = 1.0) -> None:
    """A random stream: sample batches each 0.1 s (messages with sequence numbers, blocks
    with a missing sample, single samples), components starting at different times, gaps,
    back-jumps and lost frames; telemetry on time, late, in the future and pausing;
    workload snapshots on time, late, out of order and pausing long enough to go stale; and a
    window after most batches, sometimes without features, sometimes none. ``breaks``
    scales how often gaps, back-jumps and lost frames come."""
    rng = np.random.default_rng(seed)
    start = {"a": 0.0, "b": 0.0, "c": 1.7, "d": 4.3}
    paused_until = dict.fromkeys(NAMES, 0.0)
    tele_paused_until = dict.fromkeys(NAMES, 0.0)
    snaps_paused_until, seq, t = 0.0, 0, T0 + 0.0003
    period, per_batch = 0.01, 10
    while t < T0 + seconds:
        live = [n for n in pair.fast.components if t - T0 >= start.get(n, 0.0)
                and t >= paused_until[n]]
        if rng.random() < 0.02 * breaks:                  # a gap in one component
            paused_until[str(rng.choice(NAMES))] = t + rng.uniform(0.2, 2.5)
        power = 60.0 + 40.0 * rng.random((len(live), per_batch)) + 30.0 * (rng.random() < 0.2)
        kind = rng.random()
        t0 = t
        if rng.random() < 0.01 * breaks:
            t0 = t - rng.uniform(0.05, 0.4)                 # a back-jump
        if live and kind < 0.7:
            lost = int(rng.integers(1, 80)) if rng.random() < 0.03 * breaks else 0
            jump = int(rng.integers(-30, 0)) if rng.random() < 0.005 * breaks else 0
            pair.push_samples(samples_msg(t0, period, live, power, seq + lost + jump, lost))
            seq += lost + per_batch
        elif live and kind < 0.9:
            if rng.random() < 0.5:
                power[rng.integers(len(live)), rng.integers(per_batch)] = np.nan
            pair.push_power_block(t0, period, live + ["not-tracked"][:len(live) % 2],
                                  np.vstack([power, power[:len(live) % 2]]))
        else:
            for name, row in zip(live, power, strict=True):
                for k in range(0, per_batch, 3):
                    pair.push_power(t0 + k * period, name, row[k])
        t += per_batch * period
        for name in NAMES:                                  # telemetry, about 2 Hz
            if rng.random() < 0.01:
                tele_paused_until[name] = t + rng.uniform(1.0, 8.0)
            if t < tele_paused_until[name] or rng.random() > 0.2:
                continue
            stamp = t - rng.uniform(0.0, 0.3)
            if late_telemetry:
                r = rng.random()
                if r < 0.1:
                    stamp = t - rng.uniform(0.5, 9.0)       # late, maybe past the max age
                elif r < 0.13:
                    stamp = t + rng.uniform(0.05, 1.0)      # ahead of the power clock
                elif r < 0.16:
                    stamp = float(np.round(stamp, 1))       # two messages in one step
            values = rng.random(6) * [1, 1, 1e8, 1e8, 1e7, 1e7]
            if rng.random() < 0.1:
                values[rng.integers(6)] = np.nan
            pair.push_telemetry(stamp, name, values)
        if rng.random() < 0.05:
            pair.push_telemetry(t, "not-a-component", np.zeros(6))
        if snapshots and t >= snaps_paused_until and rng.random() < 0.06:
            stamp = t - rng.uniform(0.0, 0.2)
            if rng.random() < 0.25:
                stamp = t - rng.uniform(0.3, 12.0)          # late: older than the newest
            pair.push_workload_events(random_snapshot(rng, stamp))
            if rng.random() < 0.08:
                snaps_paused_until = t + rng.uniform(2.0, 6.0)
        for _ in range(int(rng.choice([0, 1, 1, 1, 1, 2]))):
            pair.check(t + rng.uniform(0.0, 0.12), features=rng.random() < 0.85)


SPECS = {"small": SMALL, "three_coarse": WindowSpec(step_s=0.1, history_steps=7,
                                                    horizon_steps=3, coarse=(2, 5, 12)),
         "no_coarse": WindowSpec(step_s=0.1, history_steps=6, horizon_steps=3, coarse=())}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_random_streams_match_recomputing_from_scratch(spec, seed):
    pair = Pair(spec, telemetry_max_age_s=[5.0, 0.75][seed % 2],
                events_stale_s=[30.0, 1.5][seed // 2 % 2])
    drive(pair, seed, 75.0)
    assert pair.checks > 600 and pair.ready > 600           # windows were served, not skipped


def test_the_predictors_spec_matches_recomputing_from_scratch():
    pair = Pair(WindowSpec())                               # 149 steps held, coarse 10 and 100
    drive(pair, 11, 40.0, breaks=0.05)
    assert pair.ready > 200


def test_without_snapshots_the_schedule_gives_the_events():
    pair = Pair(SMALL)
    drive(pair, 5, 60.0, snapshots=False)
    assert pair.ready > 500 and not pair.fast._snapshots


def test_steady_streaming_computes_only_the_new_rows(monkeypatch):
    rows = []

    def counting(*args, **kwargs):
        out = feature_rows(*args, **kwargs)
        rows.append((pair.checks, len(out)))
        return out

    monkeypatch.setattr(online_mod, "feature_rows", counting)
    pair = Pair(SMALL)
    drive(pair, 3, 20.0, snapshots=False, late_telemetry=False, breaks=0.0)
    half = pair.checks // 2                 # every component ready long before
    later = [n for check, n in rows if check >= half]
    # about one new step per component and call, all components at once (the reference
    # builds its own: not counted), plus the rows a telemetry message up to 0.3 s late
    # (4 steps) takes back
    assert 0 < sum(later) <= (pair.checks - half) * len(NAMES) * 2
    assert max(later) <= 5 * len(NAMES)


def _ready_pair(**kw) -> tuple[Pair, float]:
    """A, b, c, d streamed for 4 s at 1 ms with telemetry each second: every one ready."""
    pair = Pair(SMALL, **kw)
    for k in range(40):
        t = T0 + k * 0.1
        pair.push_power_block(t, 0.01, NAMES, np.full((4, 10), 50.0 + k % 7))
        if k % 10 == 0:
            for name in NAMES:
                pair.push_telemetry(t, name, [0.1 * (k % 9)] * 6)
    t = T0 + 4.0
    assert pair.check(t)[2].all()
    return pair, t


def test_late_telemetry_changes_the_steps_it_is_held_in():
    pair, t = _ready_pair()
    before = pair.fast.window(t)[0].copy()
    pair.push_telemetry(t - 0.55, "b", [0.9, 0.9, 1e9, 1e9, 1e9, 1e9])   # for closed steps
    after = pair.check(t)[0]
    cpu = feature_names(SMALL).index("cpu_util")
    changed = np.flatnonzero(after[1, :, cpu] != before[1, :, cpu])
    assert changed.tolist() == list(range(SMALL.history_steps - 5, SMALL.history_steps))
    assert (after[[0, 2, 3]] == before[[0, 2, 3]]).all()


def test_telemetry_older_than_the_max_age_is_held_by_no_window_step():
    pair, t = _ready_pair(telemetry_max_age_s=0.35)
    before = pair.fast.window(t)[0].copy()
    pair.push_telemetry(t - 3.0, "a", [0.9] * 6)            # too old for any window step
    np.testing.assert_array_equal(pair.check(t)[0], before)
    pair.push_telemetry(t - 0.95, "a", [0.7] * 6)           # the oldest steps hold it
    after = pair.check(t)[0]
    assert (after[0] != before[0]).any() and (after[0, -3:] == before[0, -3:]).all()


def test_snapshots_out_of_order_and_the_first_one_replacing_the_schedule():
    pair, t = _ready_pair()
    job = JobEvent("j", "job", ("a", "c"), "running", t - 30.0, 100.0, 0.5, "cpu")
    pair.push_workload_events(WorkloadEvents(t - 0.45, (job,)))      # the first: all rows
    x1 = pair.check(t)[0].copy()
    pair.push_workload_events(WorkloadEvents(t - 2.0, ()))           # older: earlier steps
    x2 = pair.check(t)[0].copy()
    col = feature_names(SMALL).index("ev_run_util")
    assert x1[0, -1, col] == np.float32(0.5) and x2[0, 0, col] == 0.0
    assert x2[0, -1, col] == np.float32(0.5)
    pair.push_workload_events(WorkloadEvents(t - 0.25, ()))          # newer, between steps
    x3 = pair.check(t)[0]
    assert x3[0, -1, col] == 0.0 and (x3[0, -3:-1, col] == np.float32(0.5)).all()
    assert x3[0, -4, col] == 0.0


def test_a_stale_snapshot_turns_into_no_job_as_steps_pass():
    pair, t = _ready_pair(events_stale_s=0.5)
    job = JobEvent("j", "job", ("a",), "running", t - 30.0, 100.0, 0.5, "cpu")
    pair.push_workload_events(WorkloadEvents(t - 0.15, (job,)))
    col = feature_names(SMALL).index("ev_run_util")
    seen = []
    for k in range(10):
        pair.push_power_block(t + k * 0.1, 0.01, NAMES, np.full((4, 10), 70.0))
        seen.append(float(pair.check(t + (k + 1) * 0.1)[0][0, -1, col]))
    assert seen[0] == np.float32(0.5) and seen[-1] == 0.0


@pytest.mark.parametrize("how", ["gap", "back-jump", "lost frames", "sequence back"])
def test_a_cut_track_restarts_its_rows(how):
    pair, t0 = _ready_pair()
    seq, k = 0, 0
    for k in range(2 * SMALL.warmup_steps):
        pair.push_samples(samples_msg(t0 + k * 0.1, 0.01, NAMES, np.full((4, 10), 60.0), seq))
        seq += 10
        pair.check(t0 + (k + 1) * 0.1)
    t0 += {"gap": 0.5, "back-jump": -0.3}.get(how, 0.0)
    lost = 100 if how == "lost frames" else 0
    seq += lost - (40 if how == "sequence back" else 0)
    for j in range(k + 1, k + SMALL.warmup_steps + 5):
        pair.push_samples(samples_msg(t0 + j * 0.1, 0.01, NAMES, np.full((4, 10), 90.0), seq,
                                      lost))
        seq, lost = seq + 10, 0
        x, _, ready, _ = pair.check(t0 + (j + 1) * 0.1)
        assert ready.all() == (j > k + SMALL.warmup_steps)     # ready again, on new rows only
    assert (x[:, :, 0] == np.float32(90.0 / np.array(TOP))[:, None]).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("stamp", [float("nan"), float("inf"), -float("inf"), 1e300])
def test_telemetry_stamps_no_step_can_place(stamp):
    """hold_telemetry's search goes astray on them (their step is no int64): windows as
    before, rows kept again once the log has let them go (NaN and -inf; not inf, 1e300)."""
    pair, t = _ready_pair()
    pair.push_telemetry(stamp, "c", [0.4] * 6)
    for k in range(200):
        pair.push_power_block(t + k * 0.1, 0.01, NAMES, np.full((4, 10), 55.0 + k % 13))
        pair.push_telemetry(t + k * 0.1 - 0.2, "c", [0.01 * (k % 50)] * 6)
        pair.check(t + (k + 1) * 0.1)
    assert ("c" in pair.fast._odd_stamps) == (stamp > 0)


def test_settings_changed_after_the_start_apply_to_every_row():
    pair, t = _ready_pair()
    for name, value in [("telemetry_max_age_s", 0.25), ("events_stale_s", 0.2),
                        ("schedule", None)]:
        for w in (pair.fast, pair.ref):
            setattr(w, name, value)
        pair.check(t)
    for w in (pair.fast, pair.ref):
        w.max_w[1] = 500.0
    pair.check(t)


def test_telemetry_values_are_kept_as_pushed():
    pair, t = _ready_pair()
    values = np.full(6, 0.3)
    pair.fast.push_telemetry(t - 0.25, "a", values)
    x = pair.fast.window(t)[0].copy()
    values[:] = 0.9                                           # the caller reuses its buffer
    pair.fast.push_power_block(t, 0.01, NAMES, np.full((4, 10), 50.0))
    cpu = feature_names(SMALL).index("cpu_util")
    assert (x[0, -2:, cpu] == np.float32(0.3)).all()
    assert (pair.fast.window(t + 0.1)[0][0, -3:, cpu] == np.float32(0.3)).all()
