"""Trade-off curves: lower envelope, interpolation at matched stranded power, event classes."""

import math

import numpy as np
import pytest

from rackpower_nodes.core.tradeoff import (
    Curve,
    TradeoffError,
    at_stranded,
    by_event_class,
    matched_points,
    ratios_at,
)
from rackpower_nodes.core.workload_events import JobLog, JobRecord


def _curve(mode, pts):
    rows = [{"stranded_mean_w": s, "under_alloc_wh": e, "under_alloc_pct": e / 10} for s, e in pts]
    return Curve.from_rows(mode, rows)


def test_interpolates_between_points_and_never_extrapolates():
    c = _curve("reactive", [(300, 1.0), (100, 3.0), (200, 2.0)])
    assert at_stranded(c, "under_alloc_wh", 150) == pytest.approx(2.5)
    assert at_stranded(c, "under_alloc_wh", 300) == pytest.approx(1.0)
    assert math.isnan(at_stranded(c, "under_alloc_wh", 50))
    assert math.isnan(at_stranded(c, "under_alloc_wh", 350))


def test_a_point_that_strands_more_and_loses_more_is_not_the_modes_best():
    c = _curve("proactive", [(100, 3.0), (200, 1.0), (250, 1.5), (300, 0.5)])
    xs, ys = c.envelope("under_alloc_wh")
    assert list(xs) == [100, 200, 300]
    assert at_stranded(c, "under_alloc_wh", 250) == pytest.approx(0.75)


def test_matched_points_lie_inside_every_curves_range():
    a = _curve("a", [(100, 3.0), (400, 1.0)])
    b = _curve("b", [(200, 2.0), (600, 0.5)])
    pts = matched_points([a, b])
    assert list(pts) == pytest.approx([250, 300, 350])
    rows = ratios_at(a, b, pts)
    assert all(not math.isnan(r[3]) for r in rows)
    with pytest.raises(TradeoffError, match="do not overlap"):
        matched_points([a, _curve("c", [(500, 1.0), (700, 0.1)])])


def test_ratio_of_two_curves_at_matched_points():
    react = _curve("reactive", [(100, 4.0), (300, 2.0)])
    pro = _curve("proactive", [(100, 1.0), (300, 0.5)])
    for x, a, b, r in ratios_at(pro, react, [150, 200, 250]):
        assert a == pytest.approx(1.0 - 0.5 * (x - 100) / 200)
        assert r == pytest.approx(a / b)


def test_shortfall_is_split_by_what_the_host_was_doing():
    log = JobLog([JobRecord("1", "train", ("g1",), 0, 100, 100, 1000, 900, 1.0, "gpu-train")])
    t = np.arange(0, 400, 1.0)
    short = np.zeros((len(t), 2))
    short[120, 0] = 3600.0       # 20 s after the start: 1 Wh, a job start
    short[300, 0] = 7200.0       # 200 s in: 2 Wh, training
    short[50, 1] = 3600.0        # g2 has no job: 1 Wh idle
    short[60, 1] = -500.0        # over-allocation counts nothing
    out = by_event_class(short, t, ["g1", "g2"], log.events_at, after_start_s=60, every=1)
    assert out == pytest.approx({"job start": 1.0, "gpu-train": 2.0, "idle": 1.0})
