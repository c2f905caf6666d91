"""`rackpower-health-eval` (tools/health_eval*.py): the scores on hand-made verdict streams
(detection, delay, cause, sensor-vs-component, false alarms before onset and on clean
components), the replay's chunks, the BSC frames, and bad arguments named with exit 2."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rackpower_nodes.core.health import FRAME_FIELDS, HealthFrame, HealthVerdict
from rackpower_nodes.sim.faults import FaultSpec
from rackpower_nodes.tools.health_eval import _where
from rackpower_nodes.tools.health_eval import main as health_eval_main
from rackpower_nodes.tools.health_eval_data import (
    bsc_frames, day_kinds, draw_faults, fault_marks, replay)
from rackpower_nodes.tools.health_eval_metrics import alarm_row, class_rows, score_day

T0 = 60.0 * 28_333_333         # a whole Unix minute


def stream(states: dict[str, list[tuple[str, str]]], step_s: float = 60.0):
    """(t, verdicts) every ``step_s`` from T0 + step_s: ``states[c][i]`` = (state, cause)."""
    n = max(len(v) for v in states.values())
    for i in range(n):
        yield T0 + (i + 1) * step_s, [
            HealthVerdict(c, s[i][0], 1.0 if s[i][0] == "fault" else 0.0, s[i][1])
            for c, s in states.items()]


def ok(n: int) -> list[tuple[str, str]]:
    return [("ok", "")] * n


def test_detection_delay_cause_and_false_alarms_from_a_verdict_stream():
    psu = FaultSpec("psu_efficiency", "a", onset_s=300.0, growth_s=600.0, magnitude=0.06,
                    failure_s=1800.0)
    gain = FaultSpec("sensor_gain", "b", onset_s=600.0, growth_s=0.0, magnitude=0.08,
                     growth="step")
    states = {
        # a: a false alarm at 120 s (before onset, cleared), then fault from 540 s with the
        # right cause
        "a": [("ok", ""), ("fault", "fan_wear"), ("ok", ""), ("ok", ""), ("watch", ""),
              ("ok", ""), ("ok", ""), ("ok", ""), ("fault", "psu_efficiency"),
              ("fault", "fan_wear")] + ok(2),
        # b: detected at 720 s as a component fault (wrong cause, wrong sensor decision)
        "b": ok(11) + [("fault", "psu_efficiency")],
        # c: no fault injected: every transition into fault is a false alarm (2 here)
        "c": ok(3) + [("fault", "runaway_process"), ("fault", "runaway_process"), ("ok", ""),
                      ("fault", "disk_retries")] + ok(5),
    }
    marks = fault_marks(stream(states))
    assert [(m.component, m.new) for m in marks if m.component == "a"] == [
        ("a", True), ("a", True), ("a", False)]
    outcomes, false = score_day([psu, gain], marks, T0, T0 + 3600.0, "office", 1000)
    a, b = outcomes
    assert a.detected and a.detected_unix == T0 + 540.0
    assert a.delay_s == pytest.approx(240.0)
    assert a.lead_s == pytest.approx(1800.0 - 540.0)
    assert a.cause == "psu_efficiency" and not a.sensor_fault and a.is_sensor is False
    assert b.detected and b.delay_s == pytest.approx(120.0) and math.isnan(b.lead_s)
    assert b.cause == "psu_efficiency" and b.is_sensor and not b.sensor_fault
    assert sorted((m.component, m.t_unix - T0) for m in false) == [
        ("a", 120.0), ("c", 240.0), ("c", 420.0)]


def test_fault_verdicts_after_failure_or_the_run_do_not_count_as_detection():
    early = FaultSpec("fan_wear", "a", onset_s=60.0, growth_s=60.0, magnitude=20.0,
                      failure_s=200.0)
    late = FaultSpec("disk_retries", "b", onset_s=60.0, growth_s=0.0, magnitude=5.0,
                     growth="step")
    states = {"a": ok(4) + [("fault", "fan_wear")], "b": ok(4) + [("fault", "disk_retries")]}
    outcomes, false = score_day([early, late], fault_marks(stream(states)), T0, T0 + 240.0)
    assert [o.detected for o in outcomes] == [False, False]
    assert false == []          # after onset: not a false alarm, just too late
    with pytest.raises(ValueError, match="two on 'a'"):
        score_day([early, early], [], T0, T0 + 60.0)


def test_class_rows_per_preset_and_pooled_with_the_done_when_check():
    def outcome(preset, kind, delay_min, cause, sensor=False, failure=math.inf):
        spec = FaultSpec(kind, "x", onset_s=0.0, growth_s=0.0, magnitude=1.0, growth="step")
        states = {"x": ok(delay_min - 1) + [("fault", cause)]} if delay_min else {"x": ok(3)}
        got, _ = score_day([spec], fault_marks(stream(states)), T0, T0 + 86400.0, preset)
        return got[0]

    outs = [outcome("ai", "sensor_offset", 10, "sensor_offset"),
            outcome("ai", "sensor_offset", 30, "sensor_gain"),
            outcome("ai", "sensor_offset", 0, ""),
            outcome("office", "sensor_offset", 20, "sensor_offset"),
            outcome("office", "fan_wear", 5, "fan_wear")]
    rows = {(r["preset"], r["fault"]): r for r in class_rows(outs, ["office", "ai"])}
    ai = rows[("ai", "sensor_offset")]
    assert (ai["injected"], ai["detected"]) == (3, 2)
    assert ai["detected_pct"] == pytest.approx(200 / 3)
    assert ai["delay_med_min"] == pytest.approx(20.0)
    assert ai["cause_pct"] == pytest.approx(50.0) and ai["sensor_pct"] == pytest.approx(100.0)
    assert ai["met"] == "no"
    pooled = rows[("all", "sensor_offset")]
    assert pooled["injected"] == 4 and pooled["delay_med_min"] == pytest.approx(20.0)
    assert pooled["delay_p90_min"] == pytest.approx(28.0)
    assert rows[("office", "fan_wear")]["met"] == "yes"
    assert rows[("all", "all")]["injected"] == 5
    # presets in the order given, classes in FAULT_CLASSES' order
    assert list(rows)[:3] == [("office", "fan_wear"), ("office", "sensor_offset"),
                              ("ai", "sensor_offset")]


def test_alarm_row_counts_per_rack_week():
    marks = fault_marks(stream({"c": [("fault", "fan_wear"), ("ok", ""),
                                      ("fault", "fan_wear")]}))
    row = alarm_row("fault-free weeks", marks, 14 * 86400.0, preset="ai")
    assert row["false_alarms"] == 2 and row["per_rack_week"] == pytest.approx(1.0)
    assert row["causes"] == "fan_wear 2"


def frame(t: np.ndarray, names=("a",)) -> HealthFrame:
    z = np.zeros((len(t), len(names)))
    return HealthFrame(t, names, ("server",) * len(names), *(z for _ in FRAME_FIELDS))


class RecordingMonitor:
    """Stand-in for HealthMonitor (test only): remembers the rows of each update."""

    def __init__(self):
        self.chunks = []

    def update(self, f: HealthFrame) -> list[HealthVerdict]:
        self.chunks.append(f.t_unix.copy())
        return [HealthVerdict("a", "ok", 0.0)]


def test_false_alarms_are_named_in_the_progress_lines():
    marks = fault_marks(stream({"a": ok(2) + [("fault", "fan_wear")],
                                "b": [("fault", "sensor_offset")] + ok(2)}))
    assert _where([m for m in marks if m.new], T0) == \
        " (b sensor_offset at 0.0 h, a fan_wear at 0.1 h)"
    assert _where([], T0) == ""


def test_replay_feeds_whole_minutes_and_skips_gaps():
    t = np.concatenate([T0 + 30 + np.arange(100.0), T0 + 600 + np.arange(30.0)])
    mon = RecordingMonitor()
    got = list(replay(mon, frame(t), chunk_s=60.0))
    assert [len(c) for c in mon.chunks] == [30, 60, 10, 30]
    assert all(np.floor(c[0] / 60) == np.floor(c[-1] / 60) for c in mon.chunks)
    assert [tt for tt, _ in got] == [c[-1] for c in mon.chunks]
    with pytest.raises(ValueError, match="chunk_s"):
        list(replay(mon, frame(t), chunk_s=0.0))


def test_day_kinds_cycle_through_every_class():
    kinds = [k for d in range(8) for k in day_kinds(d, 3)]
    assert len(set(kinds)) == 8 and max(kinds.count(k) for k in kinds) == 3
    assert len(set(day_kinds(5, 3))) == 3


def test_a_day_whose_kinds_in_order_leave_one_no_component_is_drawn_constrained_first():
    """ai seed 170004 (the fifteenth run's fifth ai day): PSU and fan wear drawn first took
    both storage nodes, the only components disk retries can hit. The day is drawn again
    with disk retries first: three faults on distinct components, each one its kind can
    hit, in the order asked. A day the plain order can draw keeps its draws (ai 170003,
    as that run's log has them)."""
    from rackpower_nodes.sim.faults.effects import ALLOWED_KINDS
    from rackpower_nodes.sim.rack_sim import load_config, preset_config

    kinds_of = {c.name: c.kind for c in load_config(preset_config("ai")).components}
    kinds = day_kinds(24, 3)
    assert kinds == ["psu_efficiency", "fan_wear", "disk_retries"]
    faults = draw_faults("ai", 170004, kinds, (3600.0, 8 * 3600.0))
    assert [f.kind for f in faults] == kinds
    assert len({f.component for f in faults}) == 3
    assert all(kinds_of[f.component] in ALLOWED_KINDS[f.kind] for f in faults)
    assert faults[2].component.startswith("stor")
    kept = draw_faults("ai", 170003, day_kinds(23, 3), (3600.0, 8 * 3600.0))
    assert [(f.kind, f.component) for f in kept] == [
        ("sensor_offset", "gpu01"), ("sensor_stuck", "leaf-b"), ("sensor_gain", "stor-2")]


def test_bsc_frames_lay_each_servers_workloads_in_sequence(tmp_path):
    srv = tmp_path / "SRV_A"
    srv.mkdir()
    header = "timestamp,powerWatts,cpu_idle,bytes_in,bytes_out,bytes_read,bytes_written\n"
    for name, t0, w in (("b_second", 5000.0, 150.0), ("a_first", 9000.0, 100.0)):
        rows = [f"{t0 + 2 * i},{w + i % 3},{50},{10},{20},{30},{40}\n" for i in range(40)]
        (srv / f"{name}.csv").write_text(header + "".join(rows))
    (servers,) = bsc_frames(tmp_path)
    assert servers.name == "SRV_A" and servers.workloads == ["a_first", "b_second"]
    first, second = servers.frames
    assert first.names == ("SRV_A",) and len(first) == 40
    assert first.t_unix[0] == 9000.0 and second.t_unix[0] > first.t_unix[-1]
    assert np.allclose(first.board_mean_w[:, 0], 100.0 + np.arange(40) % 3)
    assert np.allclose(first.util, 0.5) and np.allclose(first.net_bps, 30.0)
    assert np.allclose(first.disk_bps, 70.0) and np.isnan(first.ref_w).all()
    with pytest.raises(FileNotFoundError, match="not a folder"):
        bsc_frames(tmp_path / "absent")


@pytest.mark.parametrize("argv, flag", [
    (["--presets", "office,bogus"], "--presets"),
    (["--seed", "7"], "--seed"),
    (["--train-seed", "1000"], "--train-seed"),
    (["--train-days", "0"], "--train-days"),
    (["--train-seed", "199", "--train-days", "2"], "--train-days"),
    (["--faults-per-day", "0"], "--faults-per-day"),
    (["--days", "-1"], "--days"),
    (["--hours", "2", "--onset-h", "1,8"], "--onset-h"),
    (["--onset-h", "soon"], "--onset-h"),
    (["--chunk-s", "0"], "--chunk-s"),
])
def test_bad_arguments_are_named_with_exit_code_2(argv, flag, capsys):
    assert health_eval_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rackpower-health-eval: ") and flag in err


def test_a_short_held_out_day_end_to_end_is_scored_and_repeatable(tmp_path, capsys):
    """One preset, a 1 h training day and one 1 h held-out day with 3 faults: the real
    simulator, model and monitor; the tables, the JSON, the same answer twice."""
    argv = ["--presets", "office", "--days", "1", "--hours", "1", "--onset-h", "0.2,0.5",
            "--clean-weeks", "0", "--bsc", str(tmp_path / "absent")]
    runs = []
    for k in range(2):
        assert health_eval_main([*argv, "--out", str(tmp_path / f"run{k}")]) == 0
        text = capsys.readouterr().out
        assert "| preset | fault | injected | detected_pct |" in text
        assert "BSC traces skipped" in text and "is not a folder" in text
        runs.append(json.loads((tmp_path / f"run{k}" / "health_eval.json").read_text()))
    first = runs[0]
    learned = [f for f in first["faults"] if f["detector"] == "learned"]
    assert [f["kind"] for f in learned] == day_kinds(0, 3)
    assert len({f["component"] for f in learned}) == 3
    # the no-training baseline watched the same faults
    assert [(f["kind"], f["component"]) for f in first["faults"] if f["detector"] ==
            "checks only"] == [(f["kind"], f["component"]) for f in learned]
    assert "No-training baseline (checks only" in text
    for f in first["faults"]:
        assert f["preset"] == "office" and f["seed"] == 1000
        assert f["detected"] == (f["detected_unix"] is not None)
        if f["detected"]:
            assert f["delay_s"] >= 0 and f["cause"]
    pooled = next(r for r in first["classes"] if (r["preset"], r["fault"]) == ("all", "all"))
    assert pooled["injected"] == 3
    assert first["false_alarms"][0]["set"] == "fault days"
    for row in first["false_alarms"]:       # each false alarm named: "component cause"
        assert len(row["which"]) == row["false_alarms"]
    assert runs[1]["faults"] == first["faults"]
    assert runs[1]["false_alarms"] == first["false_alarms"]


def test_train_days_learn_on_consecutive_tuning_seeds(tmp_path, capsys, monkeypatch):
    """--train-days 2: the model is fitted on the days of seeds 100 and 101 (both), then the
    held-out day of seed 1000 is watched; the report says which seeds it learned on."""
    from rackpower_nodes.tools import health_eval

    seen, fitted = [], []
    real_frame, real_fit = health_eval.sim_frame, health_eval.Harness.fit

    def frame(preset, seed, hours, faults=()):
        seen.append(seed)
        return real_frame(preset, seed, hours, faults)

    def fit(self, frames, what):
        fitted.append(len(frames))
        return real_fit(self, frames, what)

    monkeypatch.setattr(health_eval, "sim_frame", frame)
    monkeypatch.setattr(health_eval.Harness, "fit", fit)
    argv = ["--presets", "office", "--days", "1", "--hours", "0.5", "--onset-h", "0.1,0.2",
            "--clean-weeks", "0", "--no-baseline", "--train-days", "2"]
    assert health_eval_main(argv) == 0
    assert seen == [100, 101, 1000] and fitted == [2]
    assert "learned on seeds 100-101" in capsys.readouterr().out


def test_bsc_servers_are_learned_on_their_first_workload_and_monitored_on_the_rest(
        tmp_path, capsys):
    """Two tiny BSC-format servers (40 min per workload at 2 s): each learned on its first
    workload, false alarms counted over the others, the rack row beside them."""
    rng = np.random.default_rng(3)
    header = "timestamp,powerWatts,cpu_idle,bytes_in,bytes_out,bytes_read,bytes_written\n"
    for srv in ("SRV_A", "SRV_B"):
        (tmp_path / srv).mkdir()
        for w, name in enumerate(("w1", "w2", "w3")):
            util = np.clip(0.4 + 0.2 * np.sin(np.arange(1200) / 90.0)
                           + 0.03 * rng.standard_normal(1200), 0, 1)
            power = 120 + 100 * util + rng.standard_normal(1200)
            rows = [f"{1.6e9 + 5000 * w + 2 * i},{power[i]:.2f},{100 * (1 - util[i]):.2f},"
                    f"1e5,2e5,3e5,4e5\n" for i in range(1200)]
            (tmp_path / srv / f"{name}.csv").write_text(header + "".join(rows))
    out = tmp_path / "out"
    assert health_eval_main(["--presets", "office", "--days", "0", "--clean-weeks", "0",
                             "--bsc", str(tmp_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| SRV_A | learned | w1 |" in text and "| SRV_B | checks only | w1 |" in text
    data = json.loads((out / "health_eval.json").read_text())
    assert [(r["server"], r["detector"]) for r in data["bsc"]] == [
        ("SRV_A", "learned"), ("SRV_A", "checks only"), ("SRV_B", "learned"),
        ("SRV_B", "checks only")]
    assert [r["monitored_h"] for r in data["bsc"]] == pytest.approx([4 / 3] * 4, rel=0.01)
    for det in ("learned", "checks only"):
        (rack,) = [r for r in data["false_alarms"] if r["detector"] == det]
        assert rack["preset"] == "bsc" and rack["runs"] == 2
        assert rack["false_alarms"] == sum(r["false_alarms"] for r in data["bsc"]
                                           if r["detector"] == det)
    assert data["classes"] == [] and data["faults"] == []


def test_too_little_to_learn_on_is_named_with_exit_code_2(capsys):
    # 7 x 0.25 h fault-free days, but one 15-minute training day: too few minutes to fit
    argv = ["--presets", "office", "--days", "0", "--hours", "0.25", "--onset-h", "0.1,0.2",
            "--clean-weeks", "1", "--no-baseline"]
    assert health_eval_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rackpower-health-eval: cannot learn on --train-days 1 x --hours "
                          "0.25: fit: 15 minutes of data"), err
    assert "Traceback" not in err


def test_a_bsc_server_too_short_to_learn_on_is_said_and_the_others_still_count(tmp_path,
                                                                              capsys):
    rng = np.random.default_rng(4)
    header = "timestamp,powerWatts,cpu_idle,bytes_in,bytes_out,bytes_read,bytes_written\n"
    for srv, first_rows in (("SRV_A", 1200), ("SRV_SHORT", 300)):     # 40 and 10 min
        (tmp_path / srv).mkdir()
        for w, name in enumerate(("w1", "w2")):
            n = first_rows if w == 0 else 1200
            util = np.clip(0.4 + 0.03 * rng.standard_normal(n), 0, 1)
            power = 120 + 100 * util + rng.standard_normal(n)
            rows = [f"{1.6e9 + 5000 * w + 2 * i},{power[i]:.2f},{100 * (1 - util[i]):.2f},"
                    f"1e5,2e5,3e5,4e5\n" for i in range(n)]
            (tmp_path / srv / f"{name}.csv").write_text(header + "".join(rows))
    out = tmp_path / "out"
    assert health_eval_main(["--presets", "office", "--days", "0", "--clean-weeks", "0",
                             "--no-baseline", "--bsc", str(tmp_path), "--out", str(out)]) == 0
    data = json.loads((out / "health_eval.json").read_text())
    short = next(r for r in data["bsc"] if r["server"] == "SRV_SHORT")
    assert short["monitored_h"] == 0.0
    assert short["causes"].startswith("not monitored: cannot learn on SRV_SHORT's first 1 "
                                      "workload(s): fit:"), short
    (rack,) = [r for r in data["false_alarms"] if r["preset"] == "bsc"]
    assert rack["runs"] == 1                   # SRV_A alone
    a = next(r for r in data["bsc"] if r["server"] == "SRV_A")
    assert a["monitored_h"] == pytest.approx(1200 * 2 / 3600, rel=0.01)
    assert rack["rack_weeks"] == pytest.approx(a["monitored_h"] / 168, rel=1e-6)
