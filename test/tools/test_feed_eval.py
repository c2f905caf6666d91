"""The feed-loss evaluation CLI: its table and JSON over a short held-out window, and bad
arguments refused with the flag named."""
from __future__ import annotations

import json

import pytest

from rackpower_nodes.tools.feed_eval import main


def test_a_short_feed_loss_window(tmp_path, capsys):
    out = tmp_path / "loss.json"
    rc = main(["--seeds", "5000", "--window-min", "1.5", "--loss-at-s", "20", "--loss-s",
               "60", "--feeds", "B", "--cases", "feed-aware,no capping", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "feed B lost at 20 s for 60 s" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| feed-aware") or line.startswith("| no capping")}
    assert set(rows) == {"feed-aware", "no capping"}
    runs = {r["case"]: r for r in json.loads(out.read_text())["loss"]}
    aware, uncapped = runs["feed-aware"], runs["no capping"]
    assert aware["lost"] == "B" and aware["seed"] == 5000
    assert aware["survivor_trips"] == 0 and aware["time_to_cap_s"] is not None
    assert aware["loss_throttled_j"] > 0
    assert uncapped["survivor_trips"] == 1 and uncapped["time_to_cap_s"] is None
    assert uncapped["peak_multiple"] > 1.0 and uncapped["loss_throttled_j"] == 0.0


@pytest.mark.parametrize("args, message", [
    (["--seeds", "150"], "held-out seeds >= 5000"),
    (["--cases", "feed-aware,magic"], "--cases: ['magic']"),
    (["--loss-at-s", "500", "--loss-s", "300"], "--loss-at-s 500"),
    (["--feeds", "C"], "--feeds: ['C']"),
    (["--seeds", ""], "--seeds"),
])
def test_bad_arguments_name_the_flag(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err
