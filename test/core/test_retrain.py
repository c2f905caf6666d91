"""Off-peak retraining without ROS: the policy, the registry, the pipeline and its training job.

The pipeline tests run the real job process (``python -m rackpower_nodes.tools.retrain_job``) on
small simulated racks: 4 servers at 2 Hz, 1 s model steps, a 16-wide LSTM for 3 epochs.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.retrain import LSTM, NS, SPEC, SPEC_DOC, sim_config, train_champion, write_sim_bag

from rackpower_nodes.core import retrain as rt
from rackpower_nodes.core.forecast.features import build_windows
from rackpower_nodes.core.forecast.registry import save_model
from rackpower_nodes.core.model_registry import ModelRegistry, RegistryError
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sim.rack_sim import generate

torch.set_num_threads(1)
DAY = dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp()      # a Monday, 00:00 UTC


def at(hhmm: str, offset_s: float = 0.0) -> float:
    """Unix time of local ``hhmm`` on DAY for a rack at UTC + offset_s."""
    h, m = (int(v) for v in hhmm.split(":"))
    return DAY + h * 3600 + m * 60 - offset_s


# --- the off-peak policy ---------------------------------------------------------------------
@pytest.mark.parametrize("windows, hhmm, inside", [
    (("01:00-05:00",), "00:59", False), (("01:00-05:00",), "01:00", True),
    (("01:00-05:00",), "04:59", True), (("01:00-05:00",), "05:00", False),
    (("22:30-02:00",), "23:59", True), (("22:30-02:00",), "00:30", True),
    (("22:30-02:00",), "02:00", False), (("22:30-02:00",), "12:00", False),
    (("12:00-13:00", "22:00-24:00"), "23:30", True), (("12:00-13:00", "22:00-24:00"), "21:59",
                                                      False),
])
def test_window_membership_and_midnight(windows, hhmm, inside):
    assert rt.OffPeakPolicy(windows=windows).in_window(at(hhmm)) is inside


def test_window_uses_the_utc_offset():
    policy = rt.OffPeakPolicy(windows=("01:00-05:00",), utc_offset_s=7200)   # UTC+2
    assert policy.in_window(at("00:00"))                          # 02:00 local
    assert policy.in_window(at("23:30"))                          # 01:30 local
    assert not policy.in_window(at("04:00"))                      # 06:00 local


@pytest.mark.parametrize("text", ["1-5", "25:00-03:00", "01:00-01:00", "01:70-02:00", ""])
def test_bad_window_is_named(text):
    with pytest.raises(rt.RetrainError, match=f"window {text!r}"):
        rt.OffPeakPolicy(windows=(text,))


def test_load_rule_needs_low_load_for_the_minimum_duration():
    policy = rt.OffPeakPolicy(windows=(), load_threshold_frac=0.5, budget_w=1000,
                              load_min_s=60, min_interval_s=0)
    gate = rt.OffPeakGate(policy)
    t0 = at("12:00")
    for k in range(0, 59):
        gate.push_load(t0 + k, 400.0)
    assert not gate.check(t0 + 58, None)[0]
    gate.push_load(t0 + 60, 400.0)
    ok, why = gate.check(t0 + 60, None)
    assert ok and "load < 50%" in why
    gate.push_load(t0 + 61, 600.0)                                # above: the clock restarts
    gate.push_load(t0 + 62, 400.0)
    assert not gate.check(t0 + 62, None)[0]
    assert not gate.check(t0 + 200, None)[0], "a load older than 5 s must not count as quiet"


def test_combine_all_and_minimum_interval():
    policy = rt.OffPeakPolicy(windows=("01:00-05:00",), load_threshold_frac=0.5, budget_w=1000,
                              load_min_s=10, combine="all", min_interval_s=3600)
    gate = rt.OffPeakGate(policy)
    t = at("02:00")
    assert not gate.check(t, None)[0]                             # window yes, load unknown
    for k in range(12):
        gate.push_load(t + k, 100.0)
    assert gate.check(t + 11, None)[0]
    ok, why = gate.check(t + 11, last_retrain_unix=t - 600)
    assert not ok and "next in" in why
    assert gate.check(t + 11, last_retrain_unix=t - 4000)[0]


# --- the registry --------------------------------------------------------------------------
@pytest.fixture
def tiny_models(tmp_path_factory):
    """Three saved model folders (persistence forecasters) to register."""
    from rackpower_nodes.core.forecast.baselines import PersistenceForecaster

    data = generate(0.05, seed=3, rate_hz=2, config=sim_config())
    ws = build_windows(from_sim(data, step_s=1.0), SPEC)
    root = tmp_path_factory.mktemp("candidates")
    out = []
    for _ in range(3):
        m = PersistenceForecaster().fit(ws)
        out.append(save_model(m, root))
    return out


def test_registry_promote_reject_rollback(tmp_path, tiny_models):
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.current() is None
    a = reg.register(tiny_models[0], {"sims": [{"seed": 3}]}, {"challenger": {"mae_w": 5.0}})
    assert a["status"] == "candidate" and (tmp_path / "reg" / a["path"]).is_dir()
    reg.promote(a["version"], "initial")
    b = reg.register(tiny_models[1], {"sims": [{"seed": 4}]}, {})
    c = reg.register(tiny_models[2], {"sims": [{"seed": 5}]}, {})
    reg.promote(b["version"], "promoted")
    reg.reject(c["version"], "worse than the champion")
    assert reg.current()["version"] == b["version"]
    back = reg.rollback(reason="operator")
    assert back["version"] == a["version"] == reg.current()["version"]
    entries = reg.entries()
    assert entries[b["version"]]["status"] == "rolled_back"
    assert entries[c["version"]]["status"] == "rejected"
    assert [h["version"] for h in reg.history()] == [a["version"], b["version"], a["version"]]
    assert entries[a["version"]]["trained_on"] == {"sims": [{"seed": 3}]}
    with pytest.raises(RegistryError, match="no earlier version in service"):
        reg.rollback()                                # b was rolled back, c never served
    with pytest.raises(RegistryError, match="no version 'nope'"):
        reg.promote("nope", "x")
    again = ModelRegistry(tmp_path / "reg")           # a fresh reader sees the same state
    assert again.current()["version"] == a["version"]


def test_rollback_with_nothing_earlier_names_the_reason(tmp_path, tiny_models):
    reg = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="nothing is in service"):
        reg.rollback()
    a = reg.register(tiny_models[0], {}, {})
    reg.promote(a["version"], "initial")
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback()


def test_corrupt_registry_is_an_error_naming_the_file(tmp_path, tiny_models):
    reg = ModelRegistry(tmp_path / "reg")
    a = reg.register(tiny_models[0], {}, {})
    reg.promote(a["version"], "initial")
    good = reg.file.read_text()
    reg.file.write_text(good[: len(good) // 2])       # torn write by something else
    with pytest.raises(RegistryError, match=r"registry\.json: unreadable") as err:
        ModelRegistry(tmp_path / "reg")
    assert "registry.json.bak" in str(err.value)
    with pytest.raises(RegistryError):
        reg.promote(a["version"], "again")            # no silent overwrite
    assert reg.file.read_text() == good[: len(good) // 2]
    assert json.loads(reg.backup.read_text())["entries"], "the backup keeps the older state"


def test_registry_writes_atomically(tmp_path, tiny_models, monkeypatch):
    reg = ModelRegistry(tmp_path / "reg")
    a = reg.register(tiny_models[0], {}, {})
    before = reg.file.read_text()

    def fail(*_args, **_kw):
        raise OSError("disk full")

    monkeypatch.setattr("rackpower_nodes.core.model_registry.os.replace", fail)
    with pytest.raises(OSError):
        reg.promote(a["version"], "initial")
    monkeypatch.undo()
    assert reg.file.read_text() == before             # old file intact, no half file
    assert json.loads(reg.file.read_text())["history"] == []


# --- simulated racks and bags ------------------------------------------------------------
def run_pipeline(pipe: rt.RetrainPipeline, timeout_s: float = 120.0, **start) -> rt.Outcome:
    pipe.start(**start)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        outcome = pipe.poll()
        if outcome is not None:
            return outcome
        time.sleep(0.2)
    pipe.cancel()
    raise AssertionError(f"retrain job did not finish in {timeout_s} s")


def settings(bag_folder: Path | str = "", **job) -> dict:
    return {"bag_folder": str(bag_folder), "namespace": NS, "metric": "mae",
            "margin_frac": 0.02, "max_seconds": 110.0, "max_rss_mb": 3000.0,
            "job": {"spec": SPEC_DOC, "lstm": LSTM, "threads": 1, "nice": 5, "holdout_s": 600.0,
                    "weighting": {"max_weight": 4.0, "error_ref_w": 20.0, "radius_s": 5.0},
                    **job}}


@pytest.fixture(scope="module")
def workload_a(tmp_path_factory):
    """1 h of workload A (low load), saved; its series."""
    data = generate(1.0, seed=1, rate_hz=2, config=sim_config())
    folder = data.save(tmp_path_factory.mktemp("sim_a"))
    return data, folder, from_sim(data, step_s=1.0)


# --- the pipeline -------------------------------------------------------------------------
@pytest.mark.parametrize("corruption", ["shuffled", "zeroed"])
def test_bad_challenger_is_never_promoted(tmp_path, workload_a, corruption):
    """Training data corrupted (power shuffled in time, or a dead sensor reading 0 W) up to
    the last 15 min; the held-out slice is clean. The challenger must be rejected."""
    data, _, series = workload_a
    reg = ModelRegistry(tmp_path / "reg")
    _, champion = train_champion(series, reg)
    bad = copy.deepcopy(data)
    cut = len(bad.power_w) - 15 * 60 * int(bad.rate_hz)
    if corruption == "shuffled":
        bad.power_w[:cut] = bad.power_w[:cut][np.random.default_rng(0).permutation(cut)]
    else:
        bad.power_w[:cut] = 0.0
    folder = bad.save(tmp_path / "corrupt")
    outcome = run_pipeline(rt.RetrainPipeline(reg, settings()),
                           sources=[{"kind": "sim", "path": str(folder)}])
    print(f"bad challenger ({corruption}): {outcome.reason}")
    assert outcome.status == "rejected", outcome
    assert reg.current()["version"] == champion
    entry = reg.entry(outcome.version)
    assert entry["status"] == "rejected"
    m = entry["metrics"]
    assert m["challenger"]["mae_w"] > m["champion"]["mae_w"]
    assert m["holdout"]["windows"] == m["champion"]["windows"] == m["challenger"]["windows"]


def test_training_from_a_bag_written_with_rosbags_writer(tmp_path, workload_a):
    data, _, _ = workload_a
    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "broken.mcap").write_bytes(b"not an mcap file")
    t_err = data.start_unix + 1800.0
    errors = [(t_err + k, "srv10", 60.0) for k in range(30)]
    write_sim_bag(bags / "rack_0", data, errors)
    chosen, problems = rt.newest_bags(bags, max_span_s=7200, max_bytes=1 << 30)
    assert [Path(b.path).name for b in chosen] == ["rack_0"]
    assert problems and "broken.mcap" in problems[0]
    assert chosen[0].start_unix == pytest.approx(data.start_unix, abs=1.0)
    reg = ModelRegistry(tmp_path / "reg")
    outcome = run_pipeline(rt.RetrainPipeline(reg, settings(bags)))
    assert outcome.status in ("promoted", "rejected"), outcome   # no champion: vs persistence
    entry = reg.entry(outcome.version)
    on = entry["trained_on"]
    assert on["bags"][0]["path"].endswith("rack_0") and on["bags"][0]["bytes"] > 0
    assert on["bags"][0]["end_unix"] > on["bags"][0]["start_unix"]
    assert on["errors_logged"] == 30 and on["weighted_windows"] > 0
    assert any("broken.mcap" in p for p in entry["metrics"]["problems"])
    assert on["t_last_unix"] < entry["metrics"]["holdout"]["t_first_unix"]


def test_failed_job_is_reported(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "a.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(rt.RetrainError, match="no usable bag"):
        rt.RetrainPipeline(reg, settings(bags)).start()
    empty = tmp_path / "empty.csv"
    empty.write_text("time_s,component,power_w\n")
    outcome = run_pipeline(rt.RetrainPipeline(reg, settings()),
                           sources=[{"kind": "plain", "path": str(empty)}])
    assert outcome.status == "failed" and "no usable data" in outcome.reason
    assert reg.current() is None


@pytest.mark.parametrize("metrics, metric, promote", [
    ({"champion": {"mae_w": 10.0, "pinball_w": 3.0}, "challenger": {"mae_w": 9.79,
                                                                    "pinball_w": 3.5}},
     "mae", True),
    ({"champion": {"mae_w": 10.0, "pinball_w": 3.0}, "challenger": {"mae_w": 9.81,
                                                                    "pinball_w": 2.0}},
     "mae", False),                                       # better, but not by 2 %
    ({"champion": {"mae_w": 10.0, "pinball_w": 3.0}, "challenger": {"mae_w": 9.0,
                                                                    "pinball_w": 3.5}},
     "pinball", False),
    ({"challenger": {"mae_w": 4.0}, "persistence": {"mae_w": 5.0}}, "mae", True),
    ({"challenger": {"mae_w": 4.95}, "persistence": {"mae_w": 5.0}}, "pinball", False),
    ({"champion": {"mae_w": 5.0}, "challenger": {"mae_w": None}}, "mae", False),
])
def test_decide_needs_the_margin(metrics, metric, promote):
    ok, why = rt.decide(metrics, metric, margin_frac=0.02)
    assert ok is promote, why
    assert ("champion" if "champion" in metrics else "persistence") in why


@pytest.mark.parametrize("limits, words", [({"max_seconds": 1.0}, "over max_seconds=1"),
                                            ({"max_rss_mb": 100.0}, "over max_rss_mb=100")])
def test_job_over_its_limits_is_killed(tmp_path, workload_a, limits, words):
    _, folder, _ = workload_a
    request = {"sources": [{"kind": "sim", "path": str(folder)}], "out_root": str(tmp_path),
               "spec": SPEC_DOC, "lstm": dict(LSTM, max_epochs=1000, patience=1000),
               "threads": 1, "nice": 5}
    job = rt.RetrainJob(request, tmp_path / "job", **limits).start()
    end = time.monotonic() + 60
    while (report := job.poll()) is None and time.monotonic() < end:
        time.sleep(0.1)
    assert report is not None and not report["ok"] and words in report["error"], report
    assert job.proc.returncode is not None and job.proc.returncode < 0       # killed


def test_error_weights_repeat_windows_near_large_errors():
    data = generate(0.1, seed=2, rate_hz=2, config=sim_config())
    ws = build_windows(from_sim(data, step_s=1.0), SPEC)
    t = float(np.median(ws.t_unix))
    w = rt.error_weights(ws, [(t, "srv04", 40.0)], max_weight=4.0, error_ref_w=20.0,
                         radius_s=0.0)
    near = (ws.component == "srv04") & (ws.t_unix <= t) & (ws.t_unix >= t - 11)
    assert (w[near] == 4.0).all() and (w[~near] == 1.0).all()
    more = rt.resample_weighted(ws, w)
    assert len(more) == len(ws) + 3 * int(near.sum())


def test_drift_recovery(tmp_path, workload_a):
    """Workload A for 1 h, then the rack's load rises (workload B) for 1 h; the champion
    trained on A degrades on B, the retrained challenger recovers."""
    data_a, folder_a, series_a = workload_a
    reg = ModelRegistry(tmp_path / "reg")
    champion, champion_version = train_champion(series_a, reg)
    _, test_a = rt.holdout_split(build_windows(series_a, SPEC), 600.0)
    before = rt.evaluate({"champion": champion}, test_a)["champion"]["mae_w"]
    data_b = generate(1.0, seed=2, rate_hz=2,
                      config=sim_config(level=(0.6, 0.7), start="2024-03-04T01:00:00Z"))
    folder_b = data_b.save(tmp_path / "sim_b")
    ws_b = build_windows(from_sim(data_b, step_s=1.0), SPEC)
    pred = champion.predict(ws_b.x, ws_b.last)[:, 0, 0] * ws_b.scale_w
    err = ws_b.y[:, 0] * ws_b.scale_w - pred                     # actual - forecast, W
    big = np.abs(err) > 10.0
    errors = list(zip((ws_b.t_unix[big] + 1.0).tolist(), ws_b.component[big].tolist(),
                      err[big].tolist(), strict=True))
    outcome = run_pipeline(rt.RetrainPipeline(reg, settings()), errors=errors, sources=[
        {"kind": "sim", "path": str(folder_a)}, {"kind": "sim", "path": str(folder_b)}])
    m = outcome.metrics
    during, after = m["champion"]["mae_w"], m["challenger"]["mae_w"]
    print(f"\ndrift: MAE before {before:.2f} W (champion, workload A) | during {during:.2f} W "
          f"(champion, workload B) | after {after:.2f} W (promoted challenger, workload B) | "
          f"persistence on B {m['persistence']['mae_w']:.2f} W | recovered "
          f"{(during - after) / (during - before):.0%} of the rise; {len(errors)} logged errors")
    assert during > before * 1.2, "the workload change must raise the champion's error"
    assert outcome.status == "promoted", outcome
    assert reg.current()["version"] == outcome.version != champion_version
    assert during - after >= 0.5 * (during - before)
    seeds = [s["seed"] for s in reg.current()["trained_on"]["sims"]]
    assert seeds == [1, 2]


def test_a_served_champion_is_replaced_only_by_a_served_challenger(tmp_path, workload_a):
    """The model in service is the served forecaster. With ``model`` left to ``auto`` the job
    trains a served challenger (persistence, EWMA, LightGBM and the LSTM), never a bare LSTM,
    and scores the champion as it serves: through its live calls over the held-out windows,
    not its stateless predict. The challenger keeps the champion's selection settings (its
    loss bound's risk, which ``rackpower-train --select-risk`` may have chosen)."""
    from rackpower_nodes.core.forecast.challengers import ServedParams
    from rackpower_nodes.core.forecast.challengers.replay import replay
    from rackpower_nodes.core.forecast.peak import class_of
    _, folder, series = workload_a
    reg = ModelRegistry(tmp_path / "reg")
    champion, _ = train_champion(series, reg, served=True, params=ServedParams(risk=0.02))
    outcome = run_pipeline(rt.RetrainPipeline(reg, settings()),
                           sources=[{"kind": "sim", "path": str(folder)}])
    assert outcome.status in ("promoted", "rejected"), outcome
    doc = json.loads((reg.path_of(outcome.version) / "model.json").read_text())
    assert doc["class"] == "ServedForecaster"
    assert list(doc["state"]["members"]) == ["persistence", "ewma", "lightgbm", "lstm"]
    assert set(doc["state"]["start"]) == {"*", "srv"}
    assert doc["hyperparameters"]["risk"] == 0.02 != ServedParams().risk
    assert reg.entry(outcome.version)["trained_on"]["model"] == "served"
    _, test = rt.holdout_split(build_windows(series, SPEC), 600.0)
    y = test.y * test.scale_w[:, None]
    as_served = replay(champion, test, class_of)[0][..., 0] * test.scale_w[:, None]
    stateless = champion.predict(test.x, test.last)[..., 0] * test.scale_w[:, None]
    m = outcome.metrics["champion"]
    print(f"served champion on the held-out windows: {m['mae_w']:.3f} W as served, "
          f"{np.abs(stateless - y).mean():.3f} W by its stateless predict; {outcome.reason}")
    assert m["windows"] == len(test)
    assert m["mae_w"] == pytest.approx(np.abs(as_served - y).mean(), rel=1e-4)
    assert abs(np.abs(stateless - y).mean() - m["mae_w"]) > 1e-3


def test_the_challenger_kind_is_checked(tmp_path):
    from rackpower_nodes.core.params import ConfigError
    from rackpower_nodes.core.retrain_config import retrain_config_from_params
    from rackpower_nodes.tools.retrain_job import challenger_kind
    assert challenger_kind("auto", None) == "lstm"
    assert challenger_kind("served", None) == "served"
    with pytest.raises(ValueError, match="model='arima'"):
        challenger_kind("arima", None)
    unloadable = tmp_path / "served-1"                 # a served champion that fails to load
    unloadable.mkdir()
    (unloadable / "model.json").write_text(json.dumps({"class": "ServedForecaster"}))
    assert challenger_kind("auto", None, str(unloadable)) == "served"
    (unloadable / "model.json").write_text("{")
    assert challenger_kind("auto", None, str(unloadable)) == "lstm"
    base = {"registry.root": "/tmp/reg", "bags.folder": "/tmp/bags"}
    assert retrain_config_from_params(base).settings["job"]["model"] == "auto"
    cfg = retrain_config_from_params({**base, "training.model": "served"})
    assert cfg.settings["job"]["model"] == "served"
    with pytest.raises(ConfigError, match="training.model"):
        retrain_config_from_params({**base, "training.model": "arima"})


def test_prune_keeps_the_newest_rejected_and_everything_that_served(tmp_path, tiny_models):
    import shutil as _shutil

    reg = ModelRegistry(tmp_path / "reg")
    a = reg.register(tiny_models[0], {}, {})
    reg.promote(a["version"], "initial")
    rejected = []
    for k in range(4):                                   # four challengers that lost
        src = tmp_path / f"cand{k}"
        _shutil.copytree(tiny_models[1], src)
        rejected.append(reg.register(src, {}, {})["version"])
        reg.reject(rejected[-1], "worse than the champion")
    assert reg.prune(2) == rejected[:2]                  # the oldest two go
    entries = reg.entries()
    for v in rejected[:2]:
        assert not (reg.root / v).exists() and "pruned_unix" in entries[v]
        assert entries[v]["status"] == "rejected"        # the record stays
    for v in rejected[2:] + [a["version"]]:
        assert (reg.root / v).is_dir() and "pruned_unix" not in entries[v]
    assert reg.prune(2) == []                            # nothing more to do
    assert reg.prune(0) == rejected[2:]
    assert reg.current()["version"] == a["version"] and reg.path_of(a["version"]).is_dir()
    with pytest.raises(ValueError, match="keep = -1"):
        reg.prune(-1)
