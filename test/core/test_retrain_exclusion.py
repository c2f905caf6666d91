"""Data flagged faulty stays out of retraining, and the model's metadata says what was left out.

An hour of a quiet 4-server rack in which srv04's channel reads +500 W for ten minutes (a
sensor offset): flagged, none of that stretch reaches the training or held-out windows, the
challenger comes out the same as one trained on the clean hour with the same flag, and
registry.json and excluded.json beside the model list the interval and what it cost; not
flagged, the stretch is trained on and moves the model.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.retrain import LSTM, NS, SPEC, SPEC_DOC, sim_config

from rackpower_nodes.core import retrain as rt
from rackpower_nodes.core.forecast.features import build_windows
from rackpower_nodes.core.forecast.registry import load_model
from rackpower_nodes.core.health.types import FlaggedInterval
from rackpower_nodes.core.model_registry import ModelRegistry
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sim.rack_sim import generate

BAD = "srv04"
OFFSET_W = 500.0
BAD_FROM_S, BAD_TO_S = 1200.0, 1800.0      # into the hour
MARGIN_S = 60.0


# --- the tracker: health states to intervals ------------------------------------------------
def test_tracker_opens_at_since_keeps_through_watch_closes_on_ok():
    tr = rt.FaultTracker(keep_s=3600.0)
    tr.update("a", "watch", "fan_wear", 90.0, 100.0)
    assert tr.intervals() == []                             # watch alone flags nothing
    tr.update("a", "fault", "fan_wear", 90.0, 120.0)
    tr.update("b", "fault", "sensor_stuck", math.nan, 130.0)  # no since: from now
    assert tr.intervals() == [FlaggedInterval("a", 90.0, math.inf, "fan_wear"),
                              FlaggedInterval("b", 130.0, math.inf, "sensor_stuck")]
    tr.update("a", "watch", "fan_wear", 90.0, 140.0)       # still open
    assert tr.intervals()[0].end_unix == math.inf
    tr.update("a", "ok", "", math.nan, 150.0)
    assert tr.intervals() == [FlaggedInterval("a", 90.0, 150.0, "fan_wear"),
                              FlaggedInterval("b", 130.0, math.inf, "sensor_stuck")]


def test_tracker_merges_flapping_and_forgets_old_intervals():
    tr = rt.FaultTracker(keep_s=1000.0, max_per_component=2)
    for k, (since, ok_at) in enumerate([(100.0, 110.0), (108.0, 120.0)]):
        tr.update("a", "fault", "psu_efficiency", since, since + 1 + k)
        tr.update("a", "ok", "", math.nan, ok_at)
    assert tr.intervals() == [FlaggedInterval("a", 100.0, 120.0, "psu_efficiency")]
    for since in (300.0, 400.0):
        tr.update("a", "fault", "disk_retries", since, since + 5)
        tr.update("a", "ok", "", math.nan, since + 10)
    assert [f.start_unix for f in tr.intervals()] == [300.0, 400.0]   # at most 2 kept
    tr.update("a", "ok", "", math.nan, 1405.0)              # 300..310 ended > 1000 s ago
    assert [f.start_unix for f in tr.intervals()] == [400.0]
    tr.update("c", "fault", "fan_wear", 0.0, 5000.0)        # open ones are never dropped
    tr.update("a", "ok", "", math.nan, 9000.0)
    assert tr.intervals() == [FlaggedInterval("c", 0.0, math.inf, "fan_wear")]


def test_tracker_says_when_its_intervals_change_and_restores_them(tmp_path):
    tr = rt.FaultTracker(keep_s=3600.0)
    assert not tr.update("a", "ok", "", math.nan, 10.0)
    assert tr.update("a", "fault", "fan_wear", 5.0, 11.0)
    assert not tr.update("a", "fault", "fan_wear", 5.0, 12.0)       # the same, a second on
    assert tr.update("a", "ok", "", math.nan, 20.0)
    assert tr.update("b", "fault", "sensor_gain", 15.0, 21.0)
    rt.save_flags(tmp_path / "faults.json", tr.intervals())
    again = rt.FaultTracker(keep_s=3600.0)
    again.restore(rt.load_flags(tmp_path / "faults.json"))
    assert again.intervals() == tr.intervals()
    assert again.update("b", "ok", "", math.nan, 30.0)              # still open after restore
    assert again.intervals()[-1] == FlaggedInterval("b", 15.0, 30.0, "sensor_gain")


def test_unreadable_saved_intervals_name_the_file(tmp_path):
    assert rt.load_flags(tmp_path / "none.json") == []
    (tmp_path / "torn.json").write_text('{"intervals": [{"compo')
    with pytest.raises(rt.RetrainError, match="torn.json: unreadable"):
        rt.load_flags(tmp_path / "torn.json")
    (tmp_path / "bad.json").write_text('{"intervals": [{"start_unix": 1}]}')
    with pytest.raises(rt.RetrainError, match=r"bad.json: flagged\[0\]"):
        rt.load_flags(tmp_path / "bad.json")


@pytest.mark.parametrize("entry, words", [
    ({"start_unix": 1.0, "end_unix": 2.0, "cause": "x"}, "component"),
    ({"component": "a", "start_unix": 5.0, "end_unix": 2.0}, "ends"),
    ({"component": "a", "start_unix": "soon", "end_unix": None}, "soon"),
    ({"component": "a", "start_unix": math.nan, "end_unix": None}, "nan"),
])
def test_bad_flag_in_a_request_is_named(entry, words):
    with pytest.raises(rt.RetrainError, match=r"flagged\[1\]") as err:
        rt.flags_from_request([{"component": "a", "start_unix": 0.0, "end_unix": None}, entry])
    assert words in str(err.value)


# --- the windows --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hour():
    """(clean SimData, the same with srv04 +500 W over BAD_FROM_S..BAD_TO_S, the flag)."""
    clean = generate(1.0, seed=101, rate_hz=2, config=sim_config())
    bad = copy.deepcopy(clean)
    col = list(bad.names).index(BAD)
    rate = int(bad.rate_hz)
    bad.power_w[int(BAD_FROM_S) * rate:int(BAD_TO_S) * rate, col] += OFFSET_W
    flag = FlaggedInterval(BAD, clean.start_unix + BAD_FROM_S, clean.start_unix + BAD_TO_S,
                           "sensor_offset")
    return clean, bad, flag


def _peak_w(ws, component: str) -> float:
    """The largest power a component's windows hold, inputs (incl. coarse maxima) or
    targets, W."""
    rows = ws.component == component
    cols = [ws.feature_names.index(n) for n in ws.feature_names if n.startswith(
        ("power", "power_max")) and "slope" not in n]
    scale = ws.scale_w[rows].astype(np.float64)
    x = np.nanmax(ws.x[rows][:, :, cols].reshape(rows.sum(), -1), axis=1) * scale
    return float(max(x.max(), (ws.y[rows].max(axis=1) * scale).max()))


def test_flagged_stretch_leaves_no_window_and_unflagged_it_is_trained_on(hour):
    clean, bad, flag = hour
    ws = build_windows(from_sim(bad, step_s=1.0), SPEC)
    clean_peak = _peak_w(build_windows(from_sim(clean, step_s=1.0), SPEC), BAD)
    assert _peak_w(ws, BAD) > clean_peak + 0.9 * OFFSET_W       # unflagged: it is in there
    train, _ = rt.holdout_split(ws, 600.0)
    assert _peak_w(train, BAD) > clean_peak + 0.9 * OFFSET_W

    kept, summary = rt.exclude_flagged(ws, [flag], MARGIN_S)
    assert _peak_w(kept, BAD) <= clean_peak + 1e-3               # flagged: none of it left
    others = ws.component != BAD
    assert np.count_nonzero(kept.component != BAD) == np.count_nonzero(others)
    dropped = np.count_nonzero(ws.component == BAD) - np.count_nonzero(kept.component == BAD)
    assert summary["windows"] == dropped > 0
    # every window touching [start - margin, end) of srv04 goes: inputs + targets span
    # warmup + horizon steps, one window every stride steps
    span_steps = (flag.end_unix - flag.start_unix + MARGIN_S) / SPEC.step_s
    reach = SPEC.warmup_steps + SPEC.horizon_steps
    assert abs(dropped - (span_steps + reach) / SPEC.stride) <= 2
    iv = summary["intervals"][0]
    assert iv == {"component": BAD, "start_unix": flag.start_unix, "end_unix": flag.end_unix,
                  "cause": "sensor_offset", "sensor_fault": True, "margin_s": MARGIN_S,
                  "windows": dropped}
    comp = summary["components"][BAD]
    assert comp["seconds"] == pytest.approx(BAD_TO_S - BAD_FROM_S + MARGIN_S)
    assert comp["windows"] == dropped and not comp["whole_span"] and not summary["whole_span"]


def test_a_component_flagged_for_the_whole_span_is_said_so(hour):
    clean, _, _ = hour
    ws = build_windows(from_sim(clean, step_s=1.0), SPEC)
    still = FlaggedInterval("srv07", clean.start_unix - 10.0, math.inf, "fan_wear")
    kept, summary = rt.exclude_flagged(ws, [still], 0.0)
    assert "srv07" not in set(kept.component) and summary["whole_span"] == ["srv07"]
    assert summary["intervals"][0]["end_unix"] is None
    assert summary["components"]["srv07"]["seconds"] == pytest.approx(3600.0, abs=30.0)
    none, empty = rt.exclude_flagged(ws, [], 0.0)
    assert len(none) == len(ws) and empty["windows"] == 0 and empty["intervals"] == []


# --- the job: registry metadata and the model -------------------------------------------
def _settings() -> dict:
    return {"bag_folder": "", "namespace": NS, "metric": "mae", "margin_frac": 0.02,
            "max_seconds": 110.0, "max_rss_mb": 3000.0,
            "job": {"spec": SPEC_DOC, "lstm": LSTM, "threads": 1, "nice": 5,
                    "holdout_s": 600.0, "seed": 3, "exclusion": {"margin_s": MARGIN_S}}}


def _retrain(tmp_path: Path, name: str, data, flags) -> tuple[dict, Path]:
    reg = ModelRegistry(tmp_path / name / "reg")
    pipe = rt.RetrainPipeline(reg, _settings())
    pipe.start(sources=[{"kind": "sim", "path": str(data.save(tmp_path / name / "sim"))}],
               flagged=flags)
    end = time.monotonic() + 150.0
    while (outcome := pipe.poll()) is None:
        assert time.monotonic() < end, "retrain job did not finish in 150 s"
        time.sleep(0.2)
    assert outcome.status in ("promoted", "rejected"), outcome
    entry = reg.entry(outcome.version)
    return entry, reg.root / entry["path"]


def test_retrain_leaves_the_flagged_stretch_out_and_lists_it(tmp_path, hour):
    clean, bad, flag = hour
    entry, folder = _retrain(tmp_path, "flagged", bad, [flag])
    excluded = entry["trained_on"]["excluded"]
    iv = excluded["intervals"][0]
    assert (iv["component"], iv["start_unix"], iv["end_unix"], iv["cause"]) == (
        BAD, flag.start_unix, flag.end_unix, "sensor_offset")
    assert iv["sensor_fault"] and iv["windows"] > 0
    assert excluded["components"][BAD]["seconds"] == pytest.approx(660.0)
    assert excluded["components"][BAD]["windows"] == iv["windows"]
    assert json.loads((folder / "excluded.json").read_text()) == excluded
    assert json.loads((folder / "model.json").read_text())["data_info"]["excluded"] == excluded

    # the same flag over the clean hour: the very same training set, so the same model
    same, same_folder = _retrain(tmp_path, "clean", clean, [flag])
    assert same["trained_on"]["trained_windows"] == entry["trained_on"]["trained_windows"]
    # not flagged: the +500 W stretch is trained on and moves the model
    moved, moved_folder = _retrain(tmp_path, "unflagged", bad, [])
    assert moved["trained_on"]["excluded"]["windows"] == 0
    assert moved["trained_on"]["windows"] > entry["trained_on"]["windows"]

    ws = build_windows(from_sim(clean, step_s=1.0), SPEC)
    _, test = rt.holdout_split(ws, 600.0)
    preds = {k: load_model(f).predict(test.x, test.last) * test.scale_w[:, None, None]
             for k, f in (("flagged", folder), ("clean", same_folder),
                          ("unflagged", moved_folder))}
    assert np.abs(preds["flagged"] - preds["clean"]).max() < 1e-3          # W
    mine = test.component == BAD
    shift = np.abs(preds["unflagged"] - preds["flagged"])[mine].mean()
    print(f"+{OFFSET_W:.0f} W stretch trained on moves {BAD}'s held-out forecast by "
          f"{shift:.2f} W mean (all: {np.abs(preds['unflagged'] - preds['flagged']).mean():.2f})")
    assert shift > 1.0
