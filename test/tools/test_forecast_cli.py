"""The forecasting command-line tools end to end (tools/forecast_cli.py, tools/forecast_args.py:
`rackpower-train`, `rackpower-eval`): training every model kind on a small plain CSV, evaluating
the saved models, the leave-one-workload-out protocol, a BSC trace, errors reported with exit
code 2, and the LSTM's default feature set."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def plain_csv(tmp_path_factory) -> Path:
    """Four components <server>/<workload> at 1 s: schedule-driven power (W) and cpu_util."""
    rng = np.random.default_rng(5)
    t = 1_700_000_000 + np.arange(900.0)
    lines = ["time_s,component,power_w,cpu_util"]
    for k, name in enumerate(["srvA/web", "srvA/batch", "srvB/web", "srvB/batch"]):
        util = np.where(np.sin(2 * np.pi * (t + 17 * k) / 60) > 0, 0.8, 0.2)
        power = 100 + 150 * util + rng.normal(0, 3, len(t))
        lines += [f"{a:.1f},{name},{p:.3f},{u:.2f}" for a, p, u in zip(t, power, util)]
    path = tmp_path_factory.mktemp("plain") / "rack.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli_flags(csv: Path) -> list[str]:
    return ["--plain", str(csv), "--step-s", "1", "--history-steps", "10", "--horizon-steps",
            "4", "--coarse", "5", "--stride", "1", "--epochs", "3", "--hidden", "16",
            "--lgbm-trees", "20", "--threads", "2", "--no-progress", "--log-level", "WARNING"]


def test_train_then_eval_saved_models(plain_csv, tmp_path, capsys):
    from rackpower_nodes.tools.forecast_cli import eval_main, train_main
    root = tmp_path / "models"
    assert train_main(_cli_flags(plain_csv) + ["--model", "all", "--out", str(root)]) == 0
    saved = sorted(p.name.split("-")[0] for p in root.iterdir())
    assert saved == ["ewma", "lightgbm", "lstm", "persistence"]
    doc = json.loads(next(root.glob("lstm-*/model.json")).read_text())
    assert doc["metrics"]["val"]["mae"] > 0 and doc["data_info"]["source"] == "plain"
    assert doc["window_spec"]["coarse"] == [5]
    capsys.readouterr()
    plots = tmp_path / "plots"
    assert eval_main(_cli_flags(plain_csv) + ["--models-root", str(root), "--horizons",
                                              "1,4", "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    for name in ("lstm", "persistence", "ewma", "lightgbm"):
        assert f"| {name} | 4 | 4 |" in out            # model, step 4, lead 4 s
    assert "vs_persistence" in out and "srvB/web" in out
    assert len(list(plots.glob("*.png"))) == 4


def test_eval_leave_one_workload_out_prints_per_server_ratios(plain_csv, capsys):
    from rackpower_nodes.tools.forecast_cli import eval_main
    code = eval_main(_cli_flags(plain_csv) + ["--protocol", "leave-one-workload-out",
                                              "--horizons", "2,3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "## Per server" in out and "| srvA | lstm |" in out and "| srvB | lightgbm |" in out
    assert "- persistence: mean over servers of MAE / persistence MAE = 1.000" in out


def test_train_served_then_eval_it_as_served(plain_csv, tmp_path, capsys):
    """``--model served`` saves one model: persistence and ``--members`` fitted on the same
    windows, with a start per component class (as the forecast service classes them);
    ``rackpower-eval`` scores it through its live calls (the replay), not its stateless
    predict."""
    from rackpower_nodes.core.forecast.challengers import ServedForecaster
    from rackpower_nodes.core.forecast.challengers.replay import replay
    from rackpower_nodes.core.forecast.peak import class_of
    from rackpower_nodes.core.forecast.registry import load_model
    from rackpower_nodes.tools.forecast_args import (
        _data_args, _model_args, load_windows, window_spec)
    from rackpower_nodes.tools.forecast_cli import eval_main, train_main
    root = tmp_path / "models"
    flags = _cli_flags(plain_csv)
    assert train_main(flags + ["--model", "served", "--members", "ewma,lightgbm",
                               "--out", str(root)]) == 0
    (folder,) = root.iterdir()
    assert folder.name.startswith("served-")
    model = load_model(folder)
    assert isinstance(model, ServedForecaster)
    assert list(model.members) == ["persistence", "ewma", "lightgbm"]
    assert set(model.start) == {"*", "srvA", "srvB"}
    doc = json.loads((folder / "model.json").read_text())
    assert doc["metrics"]["val"]["mae"] > 0
    capsys.readouterr()
    assert eval_main(flags + ["--models", str(folder), "--horizons", "1,4"]) == 0
    out = capsys.readouterr().out
    assert "| served | 4 | 4 |" in out
    parser = argparse.ArgumentParser()
    _data_args(parser)
    _model_args(parser)
    args = parser.parse_args(flags)
    ws, _ = load_windows(args, window_spec(args, model.spec))
    as_served = replay(model, ws, class_of)[0]
    y = ws.y * ws.scale_w[:, None]
    mae = np.abs(as_served[:, 3, 0] * ws.scale_w - y[:, 3]).mean()
    shown = float(out.split("| served | 4 | 4 | ", 1)[1].split(" |", 1)[0])
    assert shown == pytest.approx(mae, abs=0.006)              # the replay's MAE, 4 s ahead
    stateless = np.abs(model.predict(ws.x, ws.last)[:, 3, 0] * ws.scale_w - y[:, 3]).mean()
    assert abs(stateless - mae) > 0.05                         # and not predict's
    assert train_main(flags + ["--model", "served", "--members", "persistence"]) == 2
    assert "--members 'persistence'" in capsys.readouterr().err


def test_train_served_chooses_its_risk_holding_each_workload_out(plain_csv, tmp_path, capsys):
    """``--select-risk``: the saved served forecaster serves with the risk chosen over the
    held-out workloads, and model.json keeps every candidate's record; on another model it
    is an error that names the flag."""
    from rackpower_nodes.core.forecast.challengers.risk import RISKS
    from rackpower_nodes.core.forecast.registry import load_model
    from rackpower_nodes.tools.forecast_cli import train_main
    root = tmp_path / "models"
    flags = _cli_flags(plain_csv)
    assert train_main(flags + ["--model", "served", "--members", "ewma", "--select-risk",
                               "--out", str(root)]) == 0
    (folder,) = root.iterdir()
    chosen = json.loads((folder / "model.json").read_text())["metrics"]["risk_selection"]
    assert sorted(chosen["groups"]) == ["batch", "web"]
    assert [c["risk"] for c in chosen["candidates"]] == list(RISKS)
    best = next(c for c in chosen["candidates"] if c["risk"] == chosen["risk"])
    assert chosen["qualified"] and best["worst"] <= 1.0 and not best["groups_lost"]
    assert all(c["mean"] >= best["mean"] for c in chosen["candidates"] if c["worst"] <= 1.0)
    assert load_model(folder).params.risk == chosen["risk"]
    assert f"risk {chosen['risk']:g} chosen over 2 held-out groups" in capsys.readouterr().out
    assert train_main(flags + ["--model", "lstm", "--select-risk", "--out", str(root)]) == 2
    assert "--select-risk applies to --model served alone" in capsys.readouterr().err


def test_cli_errors_are_reported_not_raised(plain_csv, tmp_path, capsys):
    from rackpower_nodes.tools.forecast_cli import eval_main, train_main
    assert train_main(_cli_flags(plain_csv) + ["--model", "arima"]) == 2
    assert "unknown ['arima']" in capsys.readouterr().err
    broken = tmp_path / "lstm-1"
    broken.mkdir()
    (broken / "model.json").write_text("{")
    assert eval_main(_cli_flags(plain_csv) + ["--models", str(broken)]) == 2
    assert "model.json: invalid JSON" in capsys.readouterr().err


def test_eval_reads_a_bsc_file(shared_data, capsys):
    from rackpower_nodes.tools.forecast_cli import eval_main
    csv = shared_data / "bsc-power" / "INTEL_Xeon_X5650" / "web_search.csv"
    assert eval_main(["--bsc", str(csv), "--model", "persistence,ewma", "--horizons", "2,3",
                      "--log-level", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert "| persistence | 3 | 6 |" in out and "INTEL_Xeon_X5650/web_search" in out


def test_cli_lstm_features_leave_out_the_week_phase_under_a_week():
    import argparse
    from rackpower_nodes.core.forecast.features import WEEK_S
    from rackpower_nodes.tools.forecast_args import _lstm_features
    names = ["power", "cpu_util", "tod_sin", "dow_sin", "dow_cos"]
    sim = argparse.Namespace(sim=Path("x"), bsc=None, plain=None, bag=None, features=None)
    assert _lstm_features(sim, names, 86400.0) == ("power", "cpu_util", "tod_sin")
    assert _lstm_features(sim, names, WEEK_S) == ()          # () = every feature
    assert _lstm_features(sim, names, None) == ()
    given = argparse.Namespace(**{**vars(sim), "features": "power,dow_*"})
    assert _lstm_features(given, names, 86400.0) == ("power", "dow_sin", "dow_cos")
    bsc = argparse.Namespace(**{**vars(sim), "sim": None, "bsc": Path("x")})
    assert _lstm_features(bsc, names, 86400.0) == ("power",)
