"""Fleet training over real processes: torchrun with two gloo ranks on CPU, and one process.

Two simulated racks (training seeds), each written as its own rosbag2 bag by
sim/bag_export with the same channel ids, are trained on by a real 2-process
``torchrun --standalone`` run and by one plain process on the same data; the model directory
must pass the registry's checks and load in the predictor's serving path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from helpers.retrain import SERVERS, SPEC_DOC, sim_config

from rackpower_nodes.core.forecast.features import WindowSpec, feature_names
from rackpower_nodes.core.forecast.forecaster import LstmForecaster
from rackpower_nodes.core.forecast.registry import load_model
from rackpower_nodes.core.forecast.serving import ForecastService
from rackpower_nodes.core.model_registry import ModelRegistry
from rackpower_nodes.sim.bag_export import write_bag
from rackpower_nodes.sim.rack_sim import generate
from rackpower_nodes.tools import fleet_data, fleet_train

RACKS = {"rack_01": 101, "rack_02": 102}        # namespace: seed (training seeds 100-199)
LSTM = {"hidden_size": 8, "max_epochs": 3, "batch_size": 64, "patience": 3}
TIMEOUT_S = 600.0                                 # a loaded 2-core machine


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet_bags")
    out = []
    for k, (ns, seed) in enumerate(RACKS.items()):
        level = (0.2 + 0.3 * k, 0.35 + 0.3 * k)   # the racks differ in load
        data = generate(0.4, seed=seed, rate_hz=2, config=sim_config(level=level))
        out.append(str(write_bag(data, root / ns, namespace=f"/{ns}")))
    return out


def _args(bags, out) -> list[str]:
    return ["--bags", *bags, "--out", str(out), "--spec", json.dumps(SPEC_DOC),
            "--lstm", json.dumps(LSTM), "--holdout-s", "240", "--max-windows", "500",
            "--seed", "100", "--register"]


def _run(cmd: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{cmd[:6]} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ddp_run(bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet_ddp")
    return out, _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node", "2", "-m", "rackpower_nodes.tools.fleet_train",
                      *_args(bags, out)])


@pytest.fixture(scope="module")
def single_run(bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet_one")
    return out, _run([sys.executable, "-m", "rackpower_nodes.tools.fleet_train",
                      *_args(bags, out)])


def _meta(report: dict) -> dict:
    return json.loads((REPO / report["model_dir"] / "model.json").read_text())


def _check_model(out, report: dict) -> LstmForecaster:
    """The registry's checks and the predictor's serving path, as a deployment runs them."""
    spec = WindowSpec(**{k: tuple(v) if k == "coarse" else v
                         for k, v in SPEC_DOC.items() if k != "stride"})
    model = load_model(report["model_dir"], expected_features=feature_names(spec),
                       kind=LstmForecaster)
    entry = ModelRegistry(out).entry(report["registered"])
    assert entry["status"] == "candidate"
    assert ModelRegistry(out).path_of(report["registered"]).samefile(report["model_dir"])
    service = ForecastService(list(SERVERS), [100.0] * 4, [400.0] * 4, spec=spec)
    served = service.load(report["model_dir"])
    assert served.version == model.version
    return model


def test_two_ranks_train_one_model_that_passes_the_registry_checks(ddp_run):
    out, report = ddp_run
    assert report["ok"] and report["world_size"] == 2
    model = _check_model(out, report)
    meta = _meta(report)
    dist = model.training["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo"
    # both ranks trained: the same count each (DistributedSampler pads), every epoch
    windows = [r["windows"] for r in dist["per_rank"]]
    assert [r["rank"] for r in dist["per_rank"]] == [0, 1]
    assert windows[0] == windows[1] > 0
    trained = meta["data_info"]["trained_windows"]
    epochs = model.training["epochs"]
    assert windows[0] == epochs * -(-trained // 2)
    # and each loaded its share of the racks
    per_rank = meta["data_info"]["per_rank"]
    assert sorted(r for p in per_rank for r in p["racks"]) == sorted(RACKS)
    assert all(len(p["racks"]) == 1 and p["windows_loaded"] > 0 for p in per_rank)
    assert {i["rack"]: i["loaded_by_rank"] for i in meta["data_info"]["racks"]} == {
        "rack_01": 0, "rack_02": 1}


def test_racks_with_the_same_channel_ids_stay_apart(ddp_run):
    _, report = ddp_run
    racks = _meta(report)["data_info"]["racks"]
    assert [r["namespace"] for r in racks] == list(RACKS)
    assert all(r["components"] == len(SERVERS) for r in racks)   # 8 components, not 4


def test_one_process_makes_a_model_of_the_same_kind(ddp_run, single_run):
    (_, two), (out, one) = ddp_run, single_run
    assert one["world_size"] == 1
    model = _check_model(out, one)
    assert "distributed" not in model.training             # the plain trainer
    a, b = _meta(two), _meta(one)
    for key in ("class", "name", "feature_names", "window_spec", "quantiles"):
        assert a[key] == b[key], key
    a["hyperparameters"].pop("threads"), b["hyperparameters"].pop("threads")  # CPUs per rank
    assert a["hyperparameters"] == b["hyperparameters"]
    for key in ("windows", "trained_windows", "val_windows", "held_out_windows"):
        assert a["data_info"][key] == b["data_info"][key], key   # the same data either way
    for meta in (a, b):                   # scored beside the baselines on the held-out tail
        assert set(meta["metrics"]) >= {"challenger", "ewma", "persistence"}


def test_no_bags_is_a_clear_error(tmp_path, capsys):
    assert fleet_train.main(["--out", str(tmp_path / "m")]) == 2
    assert "no bags given" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_missing_bag_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert fleet_train.main(["--bags", str(missing), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such file" in err


def test_a_bag_without_power_samples_is_named(bags, tmp_path, capsys):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    bad = tmp_path / "chatter_only"
    with Writer(bad, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/rack_09/chatter", "std_msgs/msg/String", typestore=store)
        msg = store.types["std_msgs/msg/String"](data="hello")
        writer.write(conn, 1, store.serialize_cdr(msg, msg.__msgtype__))
    code = fleet_train.main(["--bags", bags[0], str(bad), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err and "power_samples" in err and "/rack_09/chatter" in err


def test_a_racks_bags_are_one_rack_and_a_name_overrides(bags, tmp_path):
    data = generate(0.05, seed=103, rate_hz=2, config=sim_config())
    later = str(write_bag(data, tmp_path / "rack_01_later", namespace="/rack_01"))  # rotated
    got = fleet_data.rack_sources([bags[0], later, f"spare={bags[1]}"])
    assert [(s.bag, s.namespace, s.rack) for s in got] == [
        (bags[0], "rack_01", "rack_01"), (later, "rack_01", "rack_01"),
        (bags[1], "rack_02", "spare")]


def test_a_rack_failing_on_one_rank_stops_both_with_its_name(bags, tmp_path):
    data = generate(0.002, seed=104, rate_hz=2, config=sim_config())     # 14 s: no window
    short = str(write_bag(data, tmp_path / "rack_short", namespace="/rack_short"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "rackpower_nodes.tools.fleet_train", *_args([bags[0], short],
                                                                 tmp_path / "m")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode != 0
    for rank in (0, 1):          # rank 1 loaded it; rank 0 learns it from the exchange
        assert f"fleet_train: rank {rank}: cannot load bag {short} rack 'rack_short'" in (
            proc.stderr), proc.stderr[-3000:]
    assert "no training windows" in proc.stderr
    assert not list((tmp_path / "m").glob("lstm-*"))


def test_a_bag_of_several_racks_gives_each_rack(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from rackpower_nodes.sources.bags import message_typestore

    store = message_typestore()
    row = tmp_path / "row_bag"
    with Writer(row, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for k, ns in enumerate(("/row1/rack_a", "/row1/rack_b")):
            conn = writer.add_connection(f"{ns}/power_samples", "rackpower/msg/PowerSamples",
                                         typestore=store)
            msg = store.types["rackpower/msg/PowerSamples"](
                header=store.types["std_msgs/msg/Header"](
                    stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                    frame_id=ns),
                sample_period_s=0.5, sample_count=1, first_sequence=0, first_board_time_us=0,
                channel_ids=["srv01"], current_a=np.array([0.5], np.float32),
                voltage_v=np.array([230.0], np.float32),
                mean_power_w=np.array([115.0], np.float32),
                peak_power_w=np.array([115.0], np.float32), total_power_w=115.0,
                frames_lost=0)
            writer.write(conn, k + 1, store.serialize_cdr(msg, msg.__msgtype__))
    got = fleet_data.rack_sources([str(row)])
    assert [(s.namespace, s.rack) for s in got] == [("row1/rack_a", "row1/rack_a"),
                                                    ("row1/rack_b", "row1/rack_b")]
    with pytest.raises(fleet_data.FleetError, match="holds several racks"):
        fleet_data.rack_sources([f"one={row}"])
