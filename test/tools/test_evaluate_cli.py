"""`rackpower-evaluate` (tools/evaluate_cli.py) on short simulated runs: the table, the JSON
and the plot it writes, and bad input named with exit code 2. The evaluation itself:
test/core/test_evaluation.py."""
from __future__ import annotations

import json

from rackpower_nodes.tools.evaluate_cli import main as evaluate_main


def test_cli_prints_the_table_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "modes.json", tmp_path / "modes.png"
    rc = evaluate_main(["--hours", "0.1", "--seed", "3", "--modes", "proactive,reactive,static",
                        "--json", str(out_json), "--plot", str(out_png),
                        "--forecast-every-s", "1.0"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| mode | under-alloc time %" in text
    assert "under-allocated time % per component" in text
    rows = json.loads(out_json.read_text())
    assert set(rows[0]["under_alloc_pct_by_component"]) >= {"srv01", "tor-a"}
    assert [r["mode"] for r in rows] == ["proactive", "reactive", "static"]
    assert all(r["budget_violations"] == 0 and r["breaker_trips"] == 0 for r in rows)
    assert out_png.stat().st_size > 10_000


def test_cli_rejects_bad_input_with_a_named_error(tmp_path, capsys):
    assert evaluate_main(["--hours", "0.1", "--modes", "proactive,bogus"]) == 2
    assert "--modes" in capsys.readouterr().err
    assert evaluate_main(["--sim", str(tmp_path)]) == 2
    assert "no rack_sim.json" in capsys.readouterr().err
    assert evaluate_main(["--hours", "0.1", "-p", "policy.quantile:=p42"]) == 2
    assert "policy.quantile" in capsys.readouterr().err
    broken = tmp_path / "model"
    broken.mkdir()
    assert evaluate_main(["--hours", "0.05", "--modes", "proactive", "--model",
                          str(broken)]) == 2
    assert "model" in capsys.readouterr().err


def test_cli_runs_every_mode_at_every_delay_and_reports_each(tmp_path, capsys):
    """`--delays 0.1,rack`: a table per delay; `rack` gives the BMC-capped components
    (components.power_cap_url) --bmc-delay-s and the others --pdu-delay-s."""
    out_json = tmp_path / "delays.json"
    rc = evaluate_main(["--hours", "0.05", "--seed", "3", "--modes", "reactive,static",
                        "--delays", "0.1,rack", "--bmc-delay-s", "2", "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "## actuation delay: 0.1 s" in text
    assert "## actuation delay: rack (PDU registers 0.1 s, BMC caps 2 s on" in text
    rows = json.loads(out_json.read_text())
    assert [(r["delay"].split(" ")[0], r["mode"]) for r in rows] == [
        ("0.1", "reactive"), ("0.1", "static"), ("rack", "reactive"), ("rack", "static")]
    assert evaluate_main(["--hours", "0.05", "--delays", "0.1,soon"]) == 2
    assert "'soon' is not a delay" in capsys.readouterr().err


def test_sweep_draws_each_modes_curve_and_compares_at_matched_stranded_power(tmp_path, capsys):
    out_json, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    rc = evaluate_main(["--hours", "0.03", "--seed", "3", "--sweep", "--delays", "1",
                        "--modes", "proactive-baseline,reactive,static",
                        "--fracs", "0.02,0.3,1.0", "--min-ws", "10",
                        "--json", str(out_json), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    rows = json.loads(out_json.read_text())
    assert [r["mode"] for r in rows] == ["proactive-baseline"] * 3 + ["reactive"] * 3 + ["static"]
    assert [r["margin_frac"] for r in rows[3:6]] == [0.02, 0.3, 1.0]
    react = [r["stranded_mean_w"] for r in rows[3:6]]
    assert react == sorted(react) and react[0] < react[-1]      # a wider margin strands more
    assert all(r["breaker_trips"] == 0 and r["budget_violations"] == 0 for r in rows)
    assert "| reactive | +1, >= 10 W |" in text
    assert "| proactive-baseline / reactive |" in text
    assert png.stat().st_size > 10_000


def test_sweep_rejects_proactive_without_a_model_and_unknown_modes(capsys):
    assert evaluate_main(["--hours", "0.01", "--sweep", "--modes", "proactive,reactive"]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert evaluate_main(["--hours", "0.01", "--sweep", "--modes", "reactive,psychic"]) == 2
    assert "psychic" in capsys.readouterr().err
