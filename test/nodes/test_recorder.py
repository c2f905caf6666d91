"""The `recorder` executable with real DDS and real bags.

This process publishes the rack's topics (reliable publishers, so every message must arrive);
the recorder runs in its own process. The bags are then read with rosbags' AnyReader, the
`mcap` reader and the forecaster's `from_bag`. The source, the recorder's start and the bag
readers are in test/helpers/recorder.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.recorder import (
    CHANNELS, Source, bags_in, mcap_counts, publishing, read_bags, start_recorder)

from rackpower_nodes.core.recorder_config import recorder_config_from_params
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

MIB = 1 << 20


def _run(ros_env, tmp_path: Path, ns: str, seconds: float, rate_hz: float = 100.0,
         pad: int = 0, **params):
    folder, log = tmp_path / "bags", tmp_path / "recorder.log"
    rec = None
    try:
        with publishing(ns, pad) as source:                  # left before the recorder stops
            rec = start_recorder(ros_env, ns, folder, log, **params)
            source.wait_recorded()
            source.run(seconds, rate_hz)
            source.wait_written()
    finally:
        code = None if rec is None else stop_process(rec, timeout_s=10)
    assert code == 0, log.read_text()[-3000:]
    return source, folder, log


def test_records_every_message_rotating_by_duration(ros_env, tmp_path):
    """Every published message is in the bags, which AnyReader, mcap and from_bag read."""
    from rosbags.rosbag2 import Reader

    from rackpower_nodes.sources.bags import from_bag

    ns = "/rack_rec_all"
    source, folder, log = _run(ros_env, tmp_path, ns, 4.5, rotation__max_duration_s=1.5)
    bags = bags_in(folder)
    assert len(bags) >= 3, [b.name for b in bags]            # 1.5 s each over >= 4.5 s
    expected = {source.topic(t): n for t, n in source.sent.items()}
    counts, batches = read_bags(bags)
    assert counts == expected, log.read_text()[-2000:]
    assert mcap_counts(bags) == expected
    assert batches == list(range(source.k))                   # nothing lost, in order
    for bag in bags:
        with Reader(bag) as reader:
            assert reader.duration <= 1.6e9                   # ns
            qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert qos[f"{ns}/model_update"][0].durability.name == "TRANSIENT_LOCAL"
    assert qos[f"{ns}/power_samples"][0].reliability.name == "RELIABLE"
    longest = max(bags, key=lambda b: yaml.safe_load((b / "metadata.yaml").read_text())
                  ["rosbag2_bagfile_information"]["message_count"])
    series = from_bag(longest, step_s=0.1, namespace=ns)
    assert sorted({s.component for s in series}) == sorted(CHANNELS)
    for s in series:
        assert len(s) >= 8 and np.allclose(s.power_w, 230.0, rtol=0.15)
        if s.component in CHANNELS[:2]:
            assert np.isfinite(s.telemetry[-1, 0])            # telemetry held per host
    # ... and a forecaster trains on them (tiny: the point is the path, not the accuracy)
    from rackpower_nodes.core.forecast.features import WindowSpec, build_windows
    from rackpower_nodes.core.forecast.forecaster import LstmForecaster, LstmParams

    ws = build_windows(series, WindowSpec(step_s=0.1, history_steps=4, horizon_steps=3,
                                          coarse=(2,)))
    assert len(ws) > 0
    model = LstmForecaster(LstmParams(hidden_size=4, max_epochs=1, threads=1,
                                      calibrate=False)).fit(ws)
    q = model.predict(ws.x, ws.last)
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=-1) >= 0)


def test_rotation_by_size_and_quota_hold(ros_env, tmp_path):
    """64 KiB bags under a 256 KiB quota: the total never exceeds quota + one bag, the
    oldest bags go first, and the newest messages are all kept."""
    ns, max_bytes, quota = "/rack_rec_quota", 64 * 1024, 256 * 1024
    folder, log = tmp_path / "bags", tmp_path / "recorder.log"
    peak, rec = 0, None
    try:
        with publishing(ns, pad=1500) as source:             # ~1.7 kB per batch
            rec = start_recorder(ros_env, ns, folder, log, rotation__max_bytes=max_bytes,
                                 quota__max_total_bytes=quota, flush__interval_s=0.2)
            source.wait_recorded()

            def watch() -> bool:
                nonlocal peak
                if source.k % 10 == 0 and folder.exists():
                    peak = max(peak, _du(folder))
                return False

            source.run(8.0, 150.0, stop=watch)
            source.wait_written()
    finally:
        code = None if rec is None else stop_process(rec, timeout_s=10)
    assert code == 0, log.read_text()[-3000:]
    bags = bags_in(folder)
    sizes = [_du(b) for b in bags]
    # a closed bag: up to max_bytes, one more message, then the summary (message definitions
    # again, indexes) and metadata.yaml: ~17 KiB here, negligible at real sizes
    assert all(s <= max_bytes + 24 * 1024 for s in sizes), sizes
    assert peak <= quota + max(sizes), (peak, sizes)
    assert _du(folder) <= quota + max(sizes)
    assert source.sent["power_samples"] * 1700 > 6 * quota    # the quota really bit
    counts, batches = read_bags(bags)
    assert batches == list(range(batches[0], source.k)), "a kept bag is not the newest"
    assert batches[0] > 0


def _du(path: Path) -> int:
    """Bytes under `path`, retried when the recorder deletes a bag while it is walked."""
    for _ in range(10):
        try:
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        except FileNotFoundError:
            continue
    raise AssertionError(f"could not measure {path}")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_kill_9_loses_at_most_2_s(ros_env, tmp_path, storage):
    """SIGKILL while batches flow: after the restart salvages the unclosed bag, every batch
    sent more than 2 s before the kill is in the bags (measured: the flush interval)."""
    import rclpy

    ns, folder, log = f"/rack_rec_kill_{storage}", tmp_path / "bags", tmp_path / "recorder.log"
    with rclpy.init():
        source = Source(ns)
        rec = start_recorder(ros_env, ns, folder, log, flush__interval_s=0.5, storage=storage)
        try:
            source.wait_recorded()
            source.run(3.0)
            rec.send_signal(signal.SIGKILL)
            killed_at = time.time()
            rec.wait()
            source.run(0.5)                                   # nobody records these
            broken = bags_in(folder)
            assert broken and not (broken[0] / "metadata.yaml").exists()
            rec = start_recorder(ros_env, ns, folder, log, storage=storage)
            restarted, written = time.time(), source.written
            written.clear()                       # the new recorder counts from its start
            # a reliable writer that still has the killed reader matched delivers to the new
            # one only after a while (Fast DDS; the dead participant's lease is 20 s)
            source.run(25.0, stop=lambda: written.get(f"{ns}/power_samples", 0) > 0)
            resumed_after = time.time() - restarted
            source.run(2.0)
            time.sleep(1.0)
        finally:
            code = stop_process(rec, timeout_s=10)
            source.node.destroy_node()
    assert code == 0, log.read_text()[-3000:]
    bags = bags_in(folder)
    assert all((b / "metadata.yaml").exists() for b in bags), [b.name for b in bags]
    assert not [p for p in folder.iterdir() if p.name.endswith(".crashed")]
    counts, batches = read_bags(bags)
    if storage == "mcap":
        assert sum(mcap_counts(bags).values()) == sum(counts.values())
    sent_at = np.array(source.sent_at)
    before = set(np.flatnonzero(sent_at < killed_at).tolist())
    kept = before & set(batches)
    lost = sorted(before - kept)
    loss_s = killed_at - sent_at[lost[0]] if lost else 0.0
    print(f"kill -9: {len(lost)} of {len(before)} batches lost, the oldest sent "
          f"{loss_s:.2f} s before the kill; recording resumed {resumed_after:.1f} s after "
          "the restart")
    assert loss_s <= 2.0, (len(lost), loss_s)
    assert lost == list(range(lost[0], len(before))) if lost else True   # only the tail
    assert "salvaged" in log.read_text()
    after = [k for k in batches if sent_at[k] > killed_at + 0.5]
    assert after, "nothing recorded after the restart"


def test_double_sigint_closes_the_bag_and_the_next_start_finds_nothing_to_repair(
        ros_env, tmp_path):
    """Ctrl-C twice (and a SIGTERM) while a bag of several MB is open: the bag's close is not
    interrupted, the bag is complete (metadata.yaml, MCAP summary) and a recorder started on
    the same folder has nothing to salvage."""
    ns, folder, log = "/rack_rec_sigint", tmp_path / "bags", tmp_path / "recorder.log"
    rec = None
    try:
        with publishing(ns, pad=20000) as source:            # ~20 kB per batch
            rec = start_recorder(ros_env, ns, folder, log, flush__interval_s=0.5)
            source.wait_recorded()
            source.run(3.0, 200.0)
        rec.send_signal(signal.SIGINT)
        end = time.monotonic() + 30
        while "shutting down" not in log.read_text() and rec.poll() is None:
            assert time.monotonic() < end, log.read_text()[-3000:]
            time.sleep(0.005)
        rec.send_signal(signal.SIGINT)
        rec.send_signal(signal.SIGTERM)
        try:
            code = rec.wait(60)               # the shutdown's own deadline is 20 s
        except subprocess.TimeoutExpired:
            pytest.fail(f"the recorder did not end 60 s after the signals:\n"
                        f"{log.read_text()[-6000:]}")
    finally:
        if rec is not None:
            stop_process(rec)
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
    assert "closed the bag" in text
    bags = bags_in(folder)
    assert bags and all((b / "metadata.yaml").is_file() for b in bags), [b.name for b in bags]
    counts, batches = read_bags(bags)
    assert mcap_counts(bags) == counts
    assert batches == sorted(batches) and len(batches) > 100
    assert _du(folder) > 4 * MIB
    again = tmp_path / "again.log"
    rec = start_recorder(ros_env, ns, folder, again)
    try:
        end = time.monotonic() + 60
        while "recording [" not in again.read_text():
            assert rec.poll() is None and time.monotonic() < end, again.read_text()
            time.sleep(0.1)
    finally:
        assert stop_process(rec, timeout_s=10) == 0, again.read_text()
    assert "salvaged" not in again.read_text()
    assert read_bags(bags) == (counts, batches)


@pytest.mark.parametrize("args, key", [
    (["-p", "storage:=bag"], "storage"),
    (["-p", "rotation.max_bytes:=10"], "rotation.max_bytes"),
    (["-p", "topics:=['power samples']"], "topics[0]"),
    (["-p", "quota.max_total_bytes:=100000", "-p", "rotation.max_bytes:=65536"],
     "quota.max_total_bytes"),
])
def test_malformed_config_exits_2_naming_the_key(ros_env, tmp_path, args, key):
    proc = subprocess.run([str(executable("recorder")), "--ros-args",
                           "-p", f"output.folder:={tmp_path}", *args],
                          env=ros_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr and "invalid configuration" in proc.stderr


def test_second_recorder_on_the_same_folder_exits_2(ros_env, tmp_path):
    """It would take the first one's open bag for a crashed one."""
    folder, log = tmp_path / "bags", tmp_path / "first.log"
    first = start_recorder(ros_env, "/rack_rec_lock", folder, log)
    try:
        end = time.monotonic() + 30
        while "recording [" not in log.read_text():
            assert time.monotonic() < end and first.poll() is None, log.read_text()
            time.sleep(0.1)
        proc = subprocess.run([str(executable("recorder")), "--ros-args",
                               "-p", f"output.folder:={folder}"],
                              env=ros_env, capture_output=True, text=True, timeout=60)
    finally:
        stop_process(first)
    assert proc.returncode == 2, proc.stderr
    assert "output.folder" in proc.stderr and "another recorder" in proc.stderr


def test_config_defaults_and_errors():
    cfg = recorder_config_from_params({})
    assert cfg.storage == "mcap" and cfg.flush_interval_s <= 1.0
    assert "model_update" in cfg.topics and cfg.quota_bytes == 0
    with pytest.raises(ValueError, match="flush.interval_s = 5.0"):
        recorder_config_from_params({"flush.interval_s": 5.0})


def test_folder_gone_is_reported_and_recording_goes_on(ros_env, tmp_path):
    """The output folder removed under the running recorder: the error is on /diagnostics,
    the node keeps running, and new bags appear once the folder is back."""
    import shutil

    from diagnostic_msgs.msg import DiagnosticArray

    ns, folder, log = "/rack_rec_gone", tmp_path / "bags", tmp_path / "recorder.log"
    errors: list[str] = []
    rec = None
    try:
        with publishing(ns) as source:
            source.node.create_subscription(
                DiagnosticArray, "/diagnostics",
                lambda m: errors.extend(kv.value for s in m.status if s.name.startswith(ns)
                                        for kv in s.values
                                        if kv.key == "last_error" and kv.value),
                10)
            rec = start_recorder(ros_env, ns, folder, log, rotation__max_duration_s=1.0)
            source.wait_recorded()
            source.run(1.5)
            shutil.rmtree(folder)
            source.run(4.0)
            time.sleep(1.0)                                   # let the last ones arrive
            assert rec.poll() is None, log.read_text()[-3000:]
    finally:
        code = None if rec is None else stop_process(rec, timeout_s=10)
    assert code == 0, log.read_text()[-3000:]
    assert errors and str(folder) in errors[-1], errors[-3:]
    assert "cannot write bags" in log.read_text()
    # a bag the recorder was creating while the folder was being removed may be damaged by
    # the removal itself; every bag written after it must read, the newest one last
    readable = []
    for bag in bags_in(folder):
        try:
            read_bags([bag])
        except Exception:
            assert not readable, f"{bag.name}: unreadable, after readable {readable[-1].name}"
            continue
        readable.append(bag)
    counts, batches = read_bags(readable)
    assert batches and batches[-1] == source.k - 1
    assert os.path.isdir(folder)
