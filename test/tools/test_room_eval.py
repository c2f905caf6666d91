"""room_eval: the room evaluation's command line on a tiny room (three racks, three minutes)."""
from __future__ import annotations

import json

from rackpower_nodes.tools.room_eval import main


def test_room_eval_prints_every_mode_and_writes_json(tmp_path, capsys):
    out = tmp_path / "room.json"
    rc = main(["--racks", "3", "--seed", "100", "--presets", "office,ai,office", "--hours",
               "0.05", "--fracs", "0.1,0.3", "--json", str(out), "--cache",
               str(tmp_path / "cache")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "NOT held out" in text
    rows = json.loads(out.read_text())
    assert {(r["mode"], r["margin"]) for r in rows} == {
        (m, f"+{f} % (>= 10 W)") for m in ("shared", "fixed-guaranteed", "fixed-proportional")
        for f in ("10", "30")}
    shared = [r for r in rows if r["mode"] == "shared"]
    assert all(r["trips_rack"] == r["trips_row"] == r["trips_room"] == 0 for r in shared)
    assert all(r["over_rating_steps"] == 0 for r in shared)
    assert all(r["priority_violation_pct"] == 0 for r in shared)
    for mode in ("shared", "fixed-guaranteed", "fixed-proportional"):
        assert f"| {mode} | +10 % (>= 10 W) |" in text
    assert list((tmp_path / "cache").glob("*.npz"))          # the days are kept


def test_room_eval_names_a_bad_argument(capsys):
    assert main(["--racks", "2", "--modes", "shared,wild", "--hours", "0.01"]) == 2
    assert "--modes" in capsys.readouterr().err
    assert main(["--racks", "2", "--presets", "office,gpu", "--hours", "0.01"]) == 2
    assert "preset" in capsys.readouterr().err
    assert main(["--racks", "2", "--delays", "1,x", "--hours", "0.01"]) == 2
    assert "--delays" in capsys.readouterr().err
