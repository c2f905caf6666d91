"""The demo's closing summary (`tools/demo_summary.py`): built from observed events only."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rackpower_nodes.tools.demo_summary import (
    AllocationSeen, FaultSeen, fault_rows, format_table, incident_rows, safe_spells, summary)

T0 = 1000.0


def _allocs(modes: str, total_w=100.0, budget_w=200.0, reason="forecast missing"):
    """One allocation every 0.1 s from T0: 's' safe, 'p' proactive, 'o' over the budget."""
    out = []
    for i, c in enumerate(modes):
        mode = "safe" if c == "s" else "proactive"
        out.append(AllocationSeen(T0 + 0.1 * i, mode, reason if mode == "safe" else "",
                                  250.0 if c == "o" else total_w, budget_w))
    return out


def test_safe_spells_have_their_start_length_and_reason():
    spells = safe_spells(_allocs("sssppsspp"))
    assert [(round(a - T0, 1), round(b - T0, 1), ended) for a, b, _, ended in spells] == [
        (0.0, 0.3, True), (0.5, 0.7, True)]
    assert spells[0][2] == "forecast missing"
    # a spell still going at the end says so
    assert safe_spells(_allocs("pss"))[-1][3] is False
    assert safe_spells([]) == []


def test_a_detected_fault_row_says_when_as_what_and_what_the_actuator_did():
    allocs = _allocs("pppppopssp")
    fault = FaultSeen("sensor_stuck", "srv05", T0 + 0.2, trips_at_injection=1,
                      found_unix=T0 + 3.5, cause="sensor_stuck", sensor_fault=True)
    (row,) = fault_rows([fault], allocs, T0 - 5.0, trips_end=3, end_unix=T0 + 10)
    name, injected, detected, after, named, actuator, within, trips = row
    assert (name, injected, detected, after) == ("sensor_stuck on srv05", "+5.2 s", "yes",
                                                 "3.3 s")
    assert named == "sensor_stuck (sensor fault)"
    # the allocations from the injection on: 8, one above the budget, two safe
    assert within == "7/8"
    assert actuator.startswith("proactive 6, safe 2") and "forecast missing" in actuator
    assert trips == "2"


def test_a_missed_or_misnamed_fault_is_plain_to_see():
    missed = FaultSeen("fan_wear", "srv03", T0)
    wrong = FaultSeen("psu_degradation", "srv04", T0 + 0.5, found_unix=T0 + 1.0,
                      cause="fan_wear")
    rows = fault_rows([missed, wrong], _allocs("pppppppppp"), T0, 0, T0 + 1.0)
    assert rows[0][2:5] == ("NO", "-", "-")
    assert rows[0][6] == "5/5"                 # its span ends at the next injection
    assert "WRONG: expected psu_degradation" in rows[1][4]
    assert rows[1][6] == "5/5"


def test_incidents_list_what_went_wrong_with_counts():
    logged = [SimpleNamespace(source="rack_01.host_telemetry", level="WARN",
                              example="scrape failed: srv05: timeout after 0.4 s", count=37)]
    rows = incident_rows(_allocs("ssspop"), T0 - 1.0, frames_lost=54,
                         corrections={"raised_from_slack": 3, "none": 1},
                         exited=["predictor"], logged=logged)
    what = [r[0] for r in rows]
    assert what == ["process exited early", "actuator in safe mode",
                    "allocations above the budget", "sensor frames lost",
                    "allocation corrections", "warn logged by rack_01.host_telemetry"]
    assert rows[1][1:] == ("+1.0 s", "0.3 s", "forecast missing")
    assert rows[2][2] == "1" and "250 of 200 W" in rows[2][3]
    assert rows[3][2] == "54" and rows[4][2] == "4"
    assert rows[5][2:] == ("37", "scrape failed: srv05: timeout after 0.4 s")
    assert incident_rows(_allocs("ppp"), T0) == []


def test_many_kinds_of_warning_end_in_one_row():
    logged = [SimpleNamespace(source=f"node{i % 2}", level="WARN", example=f"w{i}", count=1)
              for i in range(12)]
    rows = incident_rows([], T0, logged=logged, max_logged=3)
    assert [r[3] for r in rows[:3]] == ["w0", "w1", "w2"]
    assert rows[3] == ("9 other kinds of warning", "-", "9", "from node0, node1")


def test_a_flapping_safe_mode_is_one_row_per_reason():
    allocs = [AllocationSeen(T0 + 0.1 * i, "safe" if c == "s" else "proactive",
                             f"no forecast received for 0.{20 + i} s" if c == "s" else "",
                             100.0, 200.0) for i, c in enumerate("spspsppss")]
    (row,) = incident_rows(allocs, T0)
    assert row[1:] == ("+0.0 s", "4 times, 0.4 s in all, still at the end",
                       "no forecast received for 0.20 s")


def test_format_table_lines_up_and_cuts_long_cells():
    text = format_table(("a", "long header"), [("x" * 80, "1"), ("y|z", "22")], width=20)
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1          # every line as wide
    assert lines[1].startswith("|---")
    assert "x" * 17 + "..." in lines[2] and "y/z" in lines[3]


@pytest.mark.parametrize("faults", [[], [FaultSeen("sensor_stuck", "srv05", T0 + 0.1)]])
def test_summary_has_both_tables(faults):
    text = summary(faults, _allocs("ppp"), T0, T0 + 1.0, 0)
    assert f"faults injected ({len(faults)})" in text
    assert "what went wrong (0 kinds)" in text and "(nothing)" in text
    assert ("NO" in text) == bool(faults)
