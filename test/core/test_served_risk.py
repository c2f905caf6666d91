"""The loss bound's risk chosen by leave-one-group-out on the training data
(challengers/risk.py): the rule, the replayed ratios it reads, and the folds it makes."""
from __future__ import annotations

import numpy as np
import pytest

from rackpower_nodes.core.forecast.baselines import EwmaForecaster, PersistenceForecaster
from rackpower_nodes.core.forecast.challengers import ServedForecaster, ServedParams
from rackpower_nodes.core.forecast.challengers.replay import replay
from rackpower_nodes.core.forecast.challengers.risk import (
    RISKS, choose_risk, risk_ratios, select_risk)
from rackpower_nodes.core.forecast.features import build_windows
from helpers.series import SMALL, component_series

MAX_W = 200.0


def test_the_best_candidate_that_never_lost_is_chosen():
    """A candidate above 1.0 at any step of any group is out, however low its mean; among
    the rest the lowest mean wins, a tie goes to the smaller risk, and every candidate's
    record names the groups it lost on."""
    ratios = {"web": np.array([[1.0, 1.0], [0.95, 0.99], [0.80, 1.02]]),
              "batch": np.array([[1.0, 1.0], [0.97, 0.98], [0.70, 0.80]])}
    got = choose_risk(ratios, [0.0, 0.01, 0.03])
    assert got["risk"] == 0.01 and got["qualified"]
    assert [c["groups_lost"] for c in got["candidates"]] == [[], [], ["web"]]
    assert got["candidates"][2]["mean"] == pytest.approx(0.83)
    assert got["candidates"][2]["worst"] == pytest.approx(1.02)
    tie = {"web": np.array([[1.0], [0.9], [0.9]])}
    assert choose_risk(tie, [0.0, 0.03, 0.01])["risk"] == 0.01
    lost = {"web": np.array([[1.01], [1.2]])}
    none = choose_risk(lost, [0.03, 0.01])
    assert none["risk"] == 0.01 and not none["qualified"]
    assert choose_risk({"web": np.array([[1.0], [1.001]])}, [0.0, 0.01])["risk"] == 0.0


def test_bad_ratios_name_what_is_wrong():
    with pytest.raises(ValueError, match="no held-out group"):
        choose_risk({}, RISKS)
    with pytest.raises(ValueError, match="2 ratios per group for 5 risks"):
        choose_risk({"web": np.ones((2, 3))}, RISKS)


def _windows(names, n=500, seed=3):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    series = [component_series(110 + 40 * np.sin(t / (9.0 + 4 * k)) + rng.normal(0, 3, n),
                               name=name, max_w=MAX_W) for k, name in enumerate(names)]
    return build_windows(series, SMALL)


def _served(ws, **params) -> ServedForecaster:
    members = {"persistence": PersistenceForecaster().fit(ws), "ewma": EwmaForecaster().fit(ws)}
    served = ServedForecaster(ServedParams(**params), members)
    served.adopt_members()
    served.select_start(ws)
    return served


def test_risk_0_serves_persistence_exactly_and_the_others_replay_as_served():
    """Ratio 1.0 at every step with risk 0 (persistence's forecast itself), each other
    candidate the replay's own MAE over persistence's, and the params left as they were."""
    ws = _windows(["srvA/web", "srvB/web"])
    served = _served(ws, guard_memory=0.0, min_errors=5, window=20)
    got = risk_ratios(served, ws, None, [0.0, 0.5])
    np.testing.assert_array_equal(got[0], np.ones(SMALL.horizon_steps))
    assert served.params.risk == ServedParams().risk
    y = np.asarray(ws.y, np.float64)
    pers = np.abs(np.asarray(ws.last, np.float64)[:, None] - y).mean(axis=0)
    served.params = ServedParams(guard_memory=0.0, min_errors=5, window=20, risk=0.5)
    p50 = replay(served, ws)[0][..., 0].astype(np.float64)
    np.testing.assert_allclose(got[1], np.abs(p50 - y).mean(axis=0) / pers, rtol=1e-5)
    assert (got[1] != 1.0).any()                 # the challenger served somewhere


def test_each_group_is_held_out_of_the_fit_it_is_judged_by():
    ws = _windows(["srvA/web", "srvA/batch", "srvB/web", "srvB/db"])
    fitted = []

    def fit(train):
        fitted.append(sorted({str(c) for c in train.component}))
        return _served(train)

    got = select_risk(ws, fit, lambda c: c.split("/")[0], [0.0, 0.01])
    assert sorted(got["groups"]) == ["batch", "db", "web"]
    assert sorted(fitted) == [["srvA/batch", "srvA/web", "srvB/web"],
                              ["srvA/batch", "srvB/db"],
                              ["srvA/web", "srvB/db", "srvB/web"]]
    assert got["risk"] in (0.0, 0.01) and got["qualified"]
    with pytest.raises(ValueError, match=r"1 group\(s\) \(web\); leave-one-group-out needs"):
        select_risk(_windows(["srvA/web", "srvB/web"]), fit)
