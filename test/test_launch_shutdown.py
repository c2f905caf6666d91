"""The whole graph under the real `ros2 launch`, ended the way an operator ends it: Ctrl-C.

A terminal's Ctrl-C sends SIGINT to the whole process group and `ros2 launch` then sends each
process a SIGINT of its own, so every node gets two (three or more with a second Ctrl-C).
Every process must end with exit code 0 and no traceback before launch escalates to SIGTERM
(5 s after the first), the actuator leaving the static split in the devices and the recorder a
complete bag that rosbags' AnyReader and the `mcap` reader open. A node that exits with a
configuration error is not restarted, and the launch log says why; nor is one that was
stopped alone and ended cleanly.

Two launches in all: each costs the 2-core machine about 10 s of CPU. How long each process
takes to exit is measured by benchmarks/bench_shutdown.py, not asserted here. The launch file
and the parameter YAML are the checkout's (the installed executables run the checkout's code
through PYTHONPATH), so this tests the tree under test even before `make setup` reinstalls it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers.graph import NODES, GraphWatch, teardown_hangs, watching

from rackpower_nodes.tools.launch_env import (
    LAUNCH_ESCALATED, LaunchedGraph, executable, stop_process, without_launch_interrupts)

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
UP_TIMEOUT_S = 240.0           # a loaded 2-core machine starts the graph in 15-60 s
#: launch escalates 5 s (SIGTERM) and 15 s (SIGKILL) after its SIGINT; a process it had to
#: SIGKILL (judged by its shutdown report: teardown_hangs) leaves launch alone, and
#: LaunchedGraph.wait_ended gives launch 18 s more before calling it hung. Under 15 + 18 s
#: the wait ended in a bare timeout instead of that judgement (a full run under two burners)
END_TIMEOUT_S = 60.0
RETRAIN_RESPAWN_DELAY_S = 5.0  # launch/rack.launch.py
NO_TRACE = ("Traceback", "never retrieved", "Exception ignored", "RCLError")


def _launch(ros_env, tmp_path: Path, rack: str, config: Path) -> LaunchedGraph:
    return LaunchedGraph([str(REPO / "launch" / "rack.launch.py"), "use_sim:=true",
                          f"rack:={rack}", f"data_dir:={tmp_path / 'data'}",
                          f"config:={config}"], ros_env, tmp_path / "launch.log")


def _exit_report(graph: LaunchedGraph) -> str:
    t0 = graph.interrupted_at[0]
    return ", ".join(f"{r.name} {r.exited_at - t0:.2f} s (exit {r.code})"
                     for r in graph.runs if r.exited_at is not None and r.exited_at >= t0)


def _assert_clean_exit(graph: LaunchedGraph, code: int, expected: set[str]) -> None:
    """Launch and every process ended, each expected one with exit 0, with no traceback
    and no escalation."""
    out = graph.output
    if graph.hung is None:
        assert code == 0, out[-4000:]
    else:
        # launch's own defect, not a process of the graph's: every process had ended, each
        # judged below, and nothing was left for launch to wait for
        print(f"{graph.hung} (launch's shutdown timers fired for processes that had ended: "
              f"{graph.escalations_after_exit})")
    assert not graph.group_alive()
    out, launch_own = without_launch_interrupts(out)
    if launch_own:
        print(f"launch printed {launch_own} Ctrl-C of its own as ignored (not the graph's)")
    for marker in NO_TRACE:
        assert marker not in out, f"{marker!r} in the launch output:\n{out[-6000:]}"
    # a node whose own stop was done but whose DDS entities rclpy never finished destroying
    # (its shutdown report names the frame) is ended by launch: rclpy's defect, reported,
    # judged by that report and the SIGKILL it got; every other process must end by itself
    hangs = teardown_hangs(graph, out)
    escalated = [e for e in graph.escalations if LAUNCH_ESCALATED.search(e)["proc"] not in hangs]
    assert not escalated, out[-4000:]                    # no process needed SIGTERM/SIGKILL
    for line in out.splitlines():
        if "sending signal 'SIGTERM'" in line or "sending signal 'SIGKILL'" in line:
            assert any(f"[{proc}]" in line for proc in hangs), line
    last = {r.name.rsplit("-", 1)[0]: r for r in graph.runs}
    assert expected <= set(last), sorted(last)
    # launch on Python < 3.13 may lose a code to its own waitpid race (CPython gh-87744) and
    # report 255 after saying so: that process's exit is not judged
    codes = {n: last[n].code for n in expected
             if not last[n].code_lost and last[n].name not in hangs}
    assert codes == dict.fromkeys(codes, 0), out[-6000:]
    lost = sorted(n for n in expected if last[n].code_lost)
    if lost:
        print(f"launch lost the exit code of {lost} (CPython gh-87744)")
    assert "shutdown: static split" in out, out[-4000:]       # the actuator's safe write


def _bags(folder: Path) -> list[Path]:
    bags = sorted(p for p in folder.iterdir() if p.is_dir())
    assert bags, f"no bag in {folder}"
    return bags


def _assert_bags_readable(bags: list[Path]) -> Counter:
    """Every bag is complete (metadata.yaml) and reads with AnyReader and with the mcap
    reader, alike; messages per topic."""
    from mcap.reader import make_reader
    from rosbags.highlevel import AnyReader

    from rackpower_nodes.sources.bags import message_typestore

    assert all((b / "metadata.yaml").is_file() for b in bags), [b.name for b in bags]
    counts: Counter = Counter()
    with AnyReader(bags, default_typestore=message_typestore()) as reader:
        for conn, _, _ in reader.messages():
            counts[conn.topic] += 1
    mcap: Counter = Counter()
    for bag in bags:
        (path,) = bag.glob("*.mcap")
        with path.open("rb") as fh:
            reader = make_reader(fh)
            assert reader.get_summary() is not None, f"{path}: no summary"
            mcap.update(channel.topic for _, channel, _ in reader.iter_messages())
    assert mcap == counts
    return counts


@pytest.fixture(scope="module")
def ctrl_c_with_a_config_error(ros2, ros_env, tmp_path_factory):
    """One launch with retrain_scheduler misconfigured, ended by one Ctrl-C once the graph is
    up and the misconfigured node has had its respawn delay; yields (graph, exit code, rack,
    folder)."""
    tmp = tmp_path_factory.mktemp("launch_ctrl_c")
    rack = "rack_ctrl_c"
    config = yaml.safe_load((REPO / "config" / "rack.yaml").read_text())
    config["/**/retrain_scheduler"]["ros__parameters"]["offpeak"]["combine"] = "sometimes"
    bad = tmp / "bad_retrain.yaml"
    bad.write_text(yaml.safe_dump(config))
    graph = None
    try:
        with watching(lambda: GraphWatch(rack)) as watch:
            graph = _launch(ros_env, tmp, rack, bad)
            graph.wait_until(lambda: watch.up(NODES[:-1]), UP_TIMEOUT_S, "graph up")
        # out of the DDS graph from here on (helpers.graph.watching): launch's output says it all

        def past_respawn_delay() -> bool:
            runs = graph.started("retrain_scheduler")
            return bool(runs) and runs[-1].exited_at is not None and (
                time.monotonic() - runs[-1].exited_at > RETRAIN_RESPAWN_DELAY_S + 3.0)

        # rack_view stopped alone (a SIGTERM from an operator or a service manager):
        # it ends cleanly and is not started again
        graph.wait_until(lambda: graph.started("rack_view"), UP_TIMEOUT_S, "rack_view")
        os.kill(graph.started("rack_view")[0].pid, signal.SIGTERM)
        graph.wait_until(lambda: graph.started("rack_view")[-1].exited_at is not None,
                         END_TIMEOUT_S, "rack_view exit")
        # a restart would come RETRAIN_RESPAWN_DELAY_S after the exit: wait past it
        graph.wait_until(past_respawn_delay, UP_TIMEOUT_S, "retrain_scheduler exit")
        graph.interrupt()
        code = graph.wait_ended(END_TIMEOUT_S)
    finally:
        if graph is not None:
            graph.close()
    print(f"Ctrl-C: {_exit_report(graph)}")
    yield graph, code, rack, tmp / "data" / rack / "bags"


def test_ctrl_c_ends_every_process_cleanly(ctrl_c_with_a_config_error):
    graph, code, rack, bags = ctrl_c_with_a_config_error
    _assert_clean_exit(graph, code, {"rack_sim", *NODES[:-1]})
    counts = _assert_bags_readable(_bags(bags))
    assert counts[f"/{rack}/power_samples"] > 0 and counts[f"/{rack}/power_allocation"] > 0


def test_config_error_is_not_respawned_and_the_log_says_why(ctrl_c_with_a_config_error):
    graph, _, rack, _ = ctrl_c_with_a_config_error
    runs = graph.started("retrain_scheduler")
    out = graph.output
    assert [r.code for r in runs] == [2], out[-4000:]
    assert "offpeak.combine" in out                                   # the node names the key
    assert (f"/{rack}/retrain_scheduler exited with a configuration error (exit 2): "
            "not restarting") in out, out[-4000:]


def test_a_node_stopped_alone_is_not_restarted_and_the_graph_runs_on(
        ctrl_c_with_a_config_error):
    """rack_view, sent SIGTERM alone before the Ctrl-C, ended with exit 0 and was not started
    again (the Ctrl-C then ended the rest; test_ctrl_c_ends_every_process_cleanly)."""
    graph, _, rack, _ = ctrl_c_with_a_config_error
    runs = graph.started("rack_view")
    assert [r.code for r in runs] == [0], graph.output[-4000:]
    assert runs[0].exited_at < graph.interrupted_at[0]
    assert f"/{rack}/rack_view stopped cleanly (exit 0): not restarting it" in graph.output


def test_double_ctrl_c_ends_every_process_cleanly_and_the_bag_closed(ros2, ros_env, tmp_path):
    """The second Ctrl-C arrives while the nodes shut down (the recorder has begun): it is
    ignored until the actuator's safe write and the bag's close are done. A recorder started
    afterwards on the same folder finds nothing to repair."""
    rack = "rack_double_ctrl_c"
    graph = None
    try:
        with watching(lambda: GraphWatch(rack)) as watch:
            graph = _launch(ros_env, tmp_path, rack, REPO / "config" / "rack.yaml")
            graph.wait_until(lambda: watch.up(NODES), UP_TIMEOUT_S, "graph up")
        graph.interrupt()                 # out of the DDS graph first (helpers.graph.watching)
        graph.wait_until(lambda: "recorder]: shutting down" in graph.output
                         or not graph.group_alive(), END_TIMEOUT_S, "recorder shutdown")
        graph.interrupt()
        code = graph.wait_ended(END_TIMEOUT_S)
    finally:
        if graph is not None:
            graph.close()
    print(f"double Ctrl-C: {_exit_report(graph)}")
    _assert_clean_exit(graph, code, {"rack_sim", *NODES})
    folder = tmp_path / "data" / rack / "bags"
    bags = _bags(folder)
    before = _assert_bags_readable(bags)
    assert before[f"/{rack}/power_samples"] > 0 and before[f"/{rack}/power_allocation"] > 0

    log = tmp_path / "recorder_again.log"
    rec = subprocess.Popen(
        [str(executable("recorder")), "--ros-args", "-r", f"__ns:=/{rack}",
         "-p", f"output.folder:={folder}", "-p", f"output.prefix:={rack}"],
        env=ros_env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "recording [" not in log.read_text():
            assert rec.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        assert stop_process(rec, timeout_s=10) == 0, log.read_text()
    assert "salvaged" not in log.read_text()
    assert _assert_bags_readable(bags) == before


def test_ctrl_c_while_a_node_imports_ends_it_quietly(ros_env):
    """The predictor's entry point gets SIGINT while it imports its module (torch: seconds):
    exit code 0, no traceback, nothing started (a signal during the start used to raise
    KeyboardInterrupt in the middle of an import)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from rackpower_nodes.nodes.entry import predictor\n"
         "print('importing', flush=True)\npredictor()"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "importing"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out


@pytest.mark.parametrize("module", ["current_sensor", "host_telemetry", "pdu_actuator",
                                    "recorder", "retrain_scheduler"])
def test_nodes_that_need_no_model_do_not_import_torch_or_lightgbm(module):
    """torch costs such a node ~2 s at start and ~0.7 s at exit; only the predictor (and the
    training job, its own process) may load it."""
    code = (f"import sys, rackpower_nodes.nodes.{module}\n"
            "print(sorted({'torch', 'lightgbm'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]", out
