"""The PSUs' own efficiency curve (`fit_psu_curve`, `psu_figure`) and what the health model
makes of it: a PSU losing efficiency found and named from its own meters, a fan not."""
from __future__ import annotations

import numpy as np
import pytest

from rackpower_nodes.core.health.psu import fit_psu_curve, psu_figure

RNG = np.random.default_rng(5)


def ratio_of(out_w):
    """in / out of a PSU with 12 W fixed losses, 2 % of output and 3e-5 W^-1 x P^2."""
    return (out_w + 12.0 + 0.02 * out_w + 3e-5 * out_w ** 2) / out_w


def test_the_curve_is_learned_and_a_loss_is_its_fraction():
    out = RNG.uniform(80, 400, 1000)
    ratio = ratio_of(out) * (1 + RNG.normal(0, 0.003, out.size))
    curve, scale = fit_psu_curve(ratio, out, np.ones(out.size, bool))
    fresh = RNG.uniform(100, 380, 200)
    ok = psu_figure(ratio_of(fresh), fresh, curve, scale)
    assert np.abs(ok).max() < 0.003
    lossy = psu_figure(ratio_of(fresh) * 1.03, fresh, curve, scale)
    assert np.median(lossy) == pytest.approx(0.03, abs=0.003)


def test_outputs_far_outside_those_trained_on_are_not_judged():
    out = RNG.uniform(150, 300, 500)
    curve, scale = fit_psu_curve(ratio_of(out), out, np.ones(out.size, bool))
    assert curve[1] >= 0 and curve[2] >= 0          # losses never shrink with output
    at = np.array([60.0, 140.0, 320.0, 400.0])
    fig = psu_figure(ratio_of(at), at, curve, scale)
    assert np.isnan(fig[[0, 3]]).all() and np.abs(fig[[1, 2]]).max() < 3e-3


def test_without_readings_there_is_no_curve():
    out = np.full(100, np.nan)
    assert fit_psu_curve(out, out, np.ones(100, bool)) is None
    assert np.isnan(psu_figure(np.ones(3), np.ones(3), np.full(5, np.nan), 1.0)).all()
