"""tools/render_rack_view.py: the picture shows the markers' colours, and the busy moment it
draws is an allocation the controller made (within the budget and every ceiling)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rackpower_nodes.core.rack_view import GREEN, RED, RackView, snapshot
from rackpower_nodes.tools.render_rack_view import busy_snapshot, draw, main


def _share_of(image: np.ndarray, rgb) -> float:
    """Fraction of the pixels within 0.04 of `rgb`."""
    return float(np.mean(np.all(np.abs(image[..., :3] - np.array(rgb[:3])) < 0.04, axis=-1)))


def test_the_picture_shows_a_held_component_red_and_one_under_green(tmp_path):
    import matplotlib.image

    snap = snapshot("rack_07", "proactive", "", 800.0, 1000.0, ["held", "easy"],
                    [250.0, 50.0], [250.0, 250.0], [300.0, 300.0])
    out = tmp_path / "view.png"
    draw(RackView().markers(snap), out)
    image = matplotlib.image.imread(out)
    assert _share_of(image, RED) > 0.001       # the held plate (and the budget line)
    assert _share_of(image, GREEN) > 0.0005    # the easy plate, and the measured gauge bar


def test_the_busy_moment_is_an_allocation_within_budget_and_ceilings():
    snap = busy_snapshot("office", hours=0.5, minutes=1.0, seed=3)
    assert snap.mode == "reactive"
    assert snap.total_allocated_w <= snap.budget_w + 1e-6
    for c in snap.components:
        assert 0.0 <= c.allocated_w <= c.ceiling_w + 1e-6
        # what it drew was capped by the allocation in force a step earlier
        assert math.isfinite(c.measured_w) and 0.0 <= c.measured_w <= c.ceiling_w + 1e-6
    assert snap.total_measured_w > 0.5 * snap.total_allocated_w       # a busy moment


def test_bad_arguments_are_refused_with_a_message(capsys):
    assert main(["--hours", "0.01", "--minutes", "5"]) == 2
    assert "expected hours > 0 and 0 < minutes <= hours x 60" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--preset", "datacentre"])
