"""A fast-mode run written as a rosbag2 bag reads back, through the training loader, as the run."""
from __future__ import annotations

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from rackpower_nodes.sim.bag_export import write_bag
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sim.rack_sim import generate
from rackpower_nodes.sources.bags import from_bag


def test_bag_of_a_run_trains_like_the_run(tmp_path):
    data = generate(0.05, seed=4)
    bag = write_bag(data, tmp_path / "history", "/rack_09")
    with AnyReader([bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    seconds = len(data.power_w) // int(data.rate_hz)
    assert counts == {"/rack_09/power_samples": seconds, "/rack_09/host_telemetry": seconds}
    from_run = {s.component: s for s in from_sim(data, step_s=0.1)}
    from_rec = {s.component: s for s in from_bag(bag, step_s=0.1, namespace="/rack_09")}
    assert from_rec.keys() == from_run.keys()
    for name, s in from_rec.items():
        r = from_run[name]
        assert s.first_step == r.first_step and len(s) == len(r)
        np.testing.assert_allclose(s.power_w, r.power_w, rtol=1e-6)
        np.testing.assert_allclose(s.telemetry, r.telemetry, rtol=1e-6, equal_nan=True)


def test_refuses_an_existing_folder_and_a_partial_sample_batch(tmp_path):
    data = generate(0.01, seed=4)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="exists already"):
        write_bag(data, tmp_path / "taken")
    with pytest.raises(ValueError, match="batch_s = 0.15"):
        write_bag(data, tmp_path / "new", batch_s=0.15)


def test_a_bag_without_allocation_errors_gives_none(tmp_path):
    from rackpower_nodes.sources.bags import allocation_errors_from_bags

    bag = write_bag(generate(0.01, seed=4), tmp_path / "history")
    assert allocation_errors_from_bags([bag]) == []
