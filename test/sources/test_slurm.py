"""The Slurm adapter: recorded outputs of a real Slurm 22.05 controller (test/data/slurm,
recorded with ``cd test && python -m helpers.slurm ../test/data/slurm``) and a real controller
on loopback (helpers.slurm; skipped, saying why, where the programs or root are missing)."""
from __future__ import annotations

import json
import logging
import math
import sys
import time

import numpy as np
import pytest
from helpers import REPO
from helpers.slurm import SlurmCluster, missing_prerequisites, missing_rest, wait_for

from rackpower_nodes.core.workload_events import EVENT_FEATURES, event_features
from rackpower_nodes.sources.slurm import (
    UNLIMITED_S,
    HostlistError,
    NodeSize,
    SlurmCommandFailed,
    SlurmCommandMissing,
    SlurmOutputError,
    SlurmQueue,
    SlurmTimeout,
    expand_hostlist,
    parse_sched_nodes,
    parse_sinfo,
    parse_squeue,
)
from rackpower_nodes.sources.slurm.squeue import gpus_in_tres

DATA = REPO / "test" / "data" / "slurm"
META = json.loads((DATA / "meta.json").read_text())
STAMP = META["stamp_unix"]


def _text(name: str) -> str:
    return (DATA / name).read_text()


def _recorded() -> dict:
    return json.loads(_text("squeue.json"))


def _raw(doc: dict, name: str) -> dict:
    return next(j for j in doc["jobs"] if j["name"] == name)


def _parse(doc=None, **kwargs):
    nodes = kwargs.pop("nodes", parse_sinfo(_text("sinfo.json")))
    sched = kwargs.pop("sched_nodes", parse_sched_nodes(_text("squeue_start.txt")))
    return parse_squeue(_text("squeue.json") if doc is None else doc, STAMP, nodes, sched,
                        **kwargs)


# --- hostlists ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expr", sorted(json.loads(_text("hostnames.json"))))
def test_hostlist_expands_as_scontrol_show_hostnames_did(expr):
    assert list(expand_hostlist(expr)) == json.loads(_text("hostnames.json"))[expr]


@pytest.mark.parametrize(("expr", "hosts"), [("", ()), ("(null)", ()), ("n[1-2]x", ("n1x", "n2x")),
                                             (" gpu[9-10] ", ("gpu9", "gpu10"))])
def test_hostlist_edge_cases(expr, hosts):
    assert expand_hostlist(expr) == hosts


@pytest.mark.parametrize(("expr", "says"), [
    ("gpu[01-04", "'[' without ']'"), ("gpu01]", "']' without '['"),
    ("gpu[[1-2]]", "nested"), ("gpu[4-1]", "runs backwards"), ("gpu[a-b]", "is not N or N-M"),
    ("gpu[1-9999999]", "more than"), ("gpu[1-2] x", "white space"),
])
def test_malformed_hostlist_is_named(expr, says):
    with pytest.raises(HostlistError) as err:
        expand_hostlist(expr)
    assert str(err.value).startswith(f"hostlist {expr!r}") and says in str(err.value)


# --- squeue --json as recorded -----------------------------------------------------------------

def test_recorded_queue_maps_every_field():
    doc = _recorded()
    events, skipped = _parse()
    assert skipped == () and events.stamp_unix == STAMP and events.source == "slurm"
    got = {j.name: (j.job_id, j.hosts, j.state, j.duration_s, j.expected_util, j.power_class)
           for j in events.jobs}
    assert got == {
        "llm-train": ("1", ("gpu01",), "running", 1800.0, 1.0, "gpu-train"),   # 4 of 4 GPUs
        "llm-serve": ("2", ("gpu02",), "running", 3600.0, 0.5, "gpu-infer"),   # 2 of 4, name
        "etl": ("3", ("cpu01",), "running", 600.0, 1.0, "cpu"),                # 4 of 4 CPUs
        "report": ("4", ("cpu01",), "pending", 300.0, 1.0, "cpu"),    # backfill's planned node
        "llm-train-2": ("5", ("gpu01",), "pending", 7200.0, 1.0, "gpu-train"),
        "nightly": ("6", (), "pending", 1200.0, 1.0, "io"),           # power_class comment
        "forever": ("7", (), "pending", UNLIMITED_S, 1.0, "cpu"),     # unknown class ignored
        "sweep": ("8_[0-3]", (), "pending", 180.0, 1.0, "cpu"),       # a pending array
    }
    for job in events.jobs:     # running: the real start; pending: backfill's or --begin's
        assert job.start_unix == _raw(doc, job.name)["start_time"]
    pending = {j.name: j.start_unix - STAMP for j in events.jobs if j.state == "pending"}
    assert 590 < pending["nightly"] < 610 and 3590 < pending["forever"] < 3610
    assert pending["report"] > 0                                  # after etl's time limit


def test_recorded_queue_without_helpers_binds_pending_jobs_only_to_required_nodes():
    events, _ = _parse(nodes={}, sched_nodes={})
    by_name = {j.name: j for j in events.jobs}
    assert by_name["report"].hosts == () and by_name["llm-train-2"].hosts == ()
    assert by_name["llm-serve"].expected_util == 1.0           # node size unknown: whole host
    assert events.for_host("cpu01") == (by_name["etl"],)


def test_recorded_sinfo_gives_node_sizes():
    assert parse_sinfo(_text("sinfo.json")) == {
        "gpu01": NodeSize(4, 4), "gpu02": NodeSize(4, 4), "cpu01": NodeSize(4, 0)}


def test_unknown_power_class_in_a_comment_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, "rackpower_nodes.sources.slurm"):
        _parse()
    assert any("slurm job 7" in r.message and "quantum" in r.message for r in caplog.records)


@pytest.mark.parametrize(("tres", "gpus"), [
    ("gres:gpu:4", 4), ("gres:gpu:a100:2", 2), ("gres/gpu=3", 3), ("gres:gpu", 1),
    ("gres:gpu:1,gres:mps:100", 1), ("cpu=4,mem=1000M", None), ("", None), ("gres:gpu:h100", 1),
])
def test_gpus_in_tres(tres, gpus):
    assert gpus_in_tres(tres) == gpus


def test_newer_slurm_shapes_are_read():
    """Slurm 23.02+ writes numbers as {set, infinite, number} and states as lists."""
    doc = _recorded()
    for job in doc["jobs"]:
        job["job_state"] = [job["job_state"]]
        for key in ("start_time", "time_limit", "cpus", "node_count"):
            if isinstance(job[key], int):
                job[key] = {"set": True, "infinite": False, "number": job[key]}
    _raw(doc, "forever")["time_limit"] = {"set": False, "infinite": True, "number": 0}
    assert _parse(json.dumps(doc))[0] == _parse()[0]


def test_states_that_draw_no_job_power_are_left_out():
    doc = _recorded()
    _raw(doc, "etl")["job_state"] = "COMPLETED"
    _raw(doc, "report")["job_state"] = "CONFIGURING"          # nodes booting: still pending
    _raw(doc, "llm-train")["job_state"] = "COMPLETING"        # cleaning up: still running
    by_name = {j.name: j.state for j in _parse(doc)[0].jobs}
    assert "etl" not in by_name
    assert (by_name["report"], by_name["llm-train"]) == ("pending", "running")


def test_pending_job_without_an_estimate_has_a_nan_start():
    doc = _recorded()
    _raw(doc, "report")["start_time"] = 0
    report = next(j for j in _parse(doc)[0].jobs if j.name == "report")
    assert report.state == "pending" and math.isnan(report.start_unix)


@pytest.mark.parametrize(("name", "field", "value"), [
    ("etl", "time_limit", "soon"), ("llm-serve", "nodes", "gpu[02"),
    ("llm-train", "start_time", 0), ("report", "job_id", -4), ("nightly", "job_state", None),
    ("sweep", "cpus", True),
])
def test_a_job_with_a_bad_field_is_skipped_and_named_the_rest_kept(name, field, value, caplog):
    doc = _recorded()
    _raw(doc, name)[field] = value
    with caplog.at_level(logging.WARNING, "rackpower_nodes.sources.slurm"):
        events, skipped = _parse(doc)
    assert sorted(j.name for j in events.jobs) == sorted(
        j["name"] for j in _recorded()["jobs"] if j["name"] != name)
    assert len(skipped) == 1 and field in skipped[0].reason and repr(value) in skipped[0].reason
    assert any(field in r.message and "skipped" in r.message for r in caplog.records)


@pytest.mark.parametrize(("text", "says"), [
    (_text("squeue.json")[:5000], "not valid JSON"),               # a cut-off answer
    ("[]", "expected a JSON object"),
    ('{"meta": {}, "errors": []}', "'jobs' is None, expected a list"),
])
def test_bad_document_raises_naming_the_command(text, says):
    with pytest.raises(SlurmOutputError, match="^squeue --json: ") as err:
        parse_squeue(text, STAMP)
    assert says in str(err.value)


def test_controller_down_is_an_error_not_an_empty_queue():
    recorded = _text("squeue_down.txt")
    assert recorded.startswith("exit status 0")             # squeue itself says all is well
    with pytest.raises(SlurmOutputError, match="Slurm reported errors: slurm_load_jobs"):
        parse_squeue(recorded[recorded.index("{"):], STAMP)


# --- SlurmQueue: real subprocesses on recorded outputs ------------------------------------------

def _replaying_queue(**kwargs) -> SlurmQueue:
    return SlurmQueue(("cat", str(DATA / "squeue.json")), 10.0,
                      start_command=("cat", str(DATA / "squeue_start.txt")),
                      nodes_command=("cat", str(DATA / "sinfo.json")),
                      clock=lambda: STAMP, **kwargs)


def test_queue_poll_runs_the_commands_and_parses():
    queue = _replaying_queue()
    assert queue.poll() == _parse()[0]
    assert queue.nodes == parse_sinfo(_text("sinfo.json")) and queue.skipped == ()


def test_queue_keeps_the_snapshot_when_a_helper_fails(caplog):
    queue = SlurmQueue(("cat", str(DATA / "squeue.json")), 10.0,
                       start_command=("rackpower-no-such-squeue", "--start"),
                       nodes_command=(sys.executable, "-c", "raise SystemExit(2)"),
                       clock=lambda: STAMP)
    with caplog.at_level(logging.WARNING, "rackpower_nodes.sources.slurm"):
        events = queue.poll()
    assert events == _parse(nodes={}, sched_nodes={})[0]
    said = " ".join(r.message for r in caplog.records)
    assert "rackpower-no-such-squeue" in said and "exit status 2" in said


def test_missing_program_is_named():
    queue = SlurmQueue(("rackpower-no-such-squeue", "--json"), start_command=None,
                       nodes_command=None)
    with pytest.raises(SlurmCommandMissing, match="^rackpower-no-such-squeue --json: .*"
                       "not found"):
        queue.poll()


def test_failed_command_gives_its_exit_status_and_stderr():
    script = ("import sys; sys.stderr.write('squeue: error: Invalid user for SlurmUser slurm"
              "\\n'); sys.exit(1)")
    cmd = (sys.executable, "-c", script)
    with pytest.raises(SlurmCommandFailed, match="exit status 1: squeue: error: Invalid user"
                       ) as err:
        SlurmQueue(cmd, start_command=None, nodes_command=None).poll()
    assert err.value.returncode == 1 and err.value.command.startswith(sys.executable)


def test_hung_command_times_out():
    cmd = (sys.executable, "-c", "import time; time.sleep(60)")
    with pytest.raises(SlurmTimeout, match=r"no answer within 0.5 s"):
        SlurmQueue(cmd, 0.5, start_command=None, nodes_command=None).poll()


def test_bad_output_from_the_command_names_it():
    queue = SlurmQueue(("echo", "squeue: invalid option -- 'json'"), start_command=None,
                       nodes_command=None)
    with pytest.raises(SlurmOutputError, match="^echo squeue: invalid .*not valid JSON"):
        queue.poll()


@pytest.mark.parametrize("kwargs", [{"command": ()}, {"command": ("squeue", "")},
                                    {"timeout_s": 0.0}, {"timeout_s": math.nan}])
def test_queue_rejects_a_bad_configuration(kwargs):
    with pytest.raises(ValueError, match="SlurmQueue"):
        SlurmQueue(**kwargs)


# --- a real controller on loopback ------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    why = missing_prerequisites()
    if why:
        pytest.skip(f"no real Slurm controller: {why}")
    with SlurmCluster() as c:
        yield c


@pytest.fixture
def slurm(cluster):
    """The cluster, with a queue on it; every job cancelled afterwards."""
    yield cluster, SlurmQueue(timeout_s=30.0, env={"SLURM_CONF": str(cluster.conf)})
    cluster.cancel_all()


def _job(queue: SlurmQueue, job_id: str):
    return next((j for j in queue.poll().jobs if j.job_id == job_id), None)


def test_real_pending_job_is_seen_with_hosts_and_start_before_it_runs(slurm):
    cluster, queue = slurm
    before = time.time()
    job_id = cluster.sbatch("-J", "llm-train", "-w", "gpu01", "--gres=gpu:2", "-c", "1",
                            "-t", "5", "--begin=now+300")
    pending = _job(queue, job_id)
    assert (pending.state, pending.hosts, pending.power_class) == ("pending", ("gpu01",),
                                                                   "gpu-train")
    # the --begin time, in Slurm's whole seconds from time(NULL), which reads the kernel's
    # coarse clock and may still show the previous second just after a tick: hence 298
    assert before + 298 <= pending.start_unix <= time.time() + 301
    assert (pending.duration_s, pending.expected_util) == (300.0, 0.5)  # 2 of 4 GPUs
    snap = queue.poll()
    assert snap.for_host("gpu01") == (pending,) and snap.for_host("gpu02") == ()
    # what a forecast reads from it 30 s before the expected start: a GPU job of half the
    # host coming on gpu01, nothing on gpu02
    at = np.array([pending.start_unix - 30.0])
    row = dict(zip(EVENT_FEATURES, event_features(lambda t: snap, "gpu01", at)[0]))
    assert (row["ev_next_in"], row["ev_next_util"], row["ev_next_gpu"]) == (0.5, 0.5, 1.0)
    assert event_features(lambda t: snap, "gpu02", at).tolist() == \
        event_features(lambda t: None, "gpu02", at).tolist()
    cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
    running = wait_for(lambda: (j := _job(queue, job_id)) and j.state == "running" and j, 60,
                       f"job {job_id} to run")
    assert before - 1 <= running.start_unix <= time.time() + 1         # its real start
    assert running.hosts == ("gpu01",) and running.end_unix == running.start_unix + 300.0


def test_real_job_waiting_for_resources_gets_backfills_start_and_node(slurm):
    cluster, queue = slurm
    first = cluster.sbatch("-J", "etl", "--constraint=cpu", "-c", "4", "-t", "2")
    running = wait_for(lambda: (j := _job(queue, first)) and j.state == "running" and j, 60,
                       f"job {first} to run")
    assert running.hosts == ("cpu01",) and running.expected_util == 1.0
    second = cluster.sbatch("-J", "report", "--constraint=cpu", "-c", "4", "-t", "1")
    # the planned node and the planned start come from two commands: wait for both
    waiting = wait_for(lambda: (j := _job(queue, second)) and j.hosts
                       and math.isfinite(j.start_unix) and j, 60,
                       f"backfill to plan job {second}'s node and start")
    assert (waiting.state, waiting.hosts) == ("pending", ("cpu01",))
    assert waiting.start_unix == pytest.approx(running.end_unix, abs=2.0)   # when etl ends


def test_real_cancelled_job_leaves_the_snapshot(slurm):
    cluster, queue = slurm
    job_id = cluster.sbatch("-J", "etl", "-w", "cpu01", "-c", "2", "-t", "5")
    wait_for(lambda: (j := _job(queue, job_id)) and j.state == "running", 60,
             f"job {job_id} to run")
    cluster.run("scancel", job_id)
    wait_for(lambda: _job(queue, job_id) is None, 60, f"job {job_id} to leave the queue")
    assert queue.poll().for_host("cpu01") == ()


def test_real_slurmrestd_gives_the_same_snapshot_as_squeue(slurm):
    why = missing_rest()
    if why:
        pytest.skip(f"slurmrestd cannot run here: {why}")
    cluster, _ = slurm
    sock = str(cluster.start_rest())
    running = cluster.sbatch("-J", "llm-serve", "-w", "gpu02", "--gres=gpu:1", "-t", "5")
    cluster.sbatch("-J", "nightly", "-w", "cpu01", "-c", "2", "-t", "20", "--begin=now+300")
    wait_for(lambda: cluster.run("squeue", "-h", "-o", "%t", "-j", running).strip() == "R", 60,
             f"job {running} to run")
    by_squeue = SlurmQueue(env={"SLURM_CONF": str(cluster.conf)}, start_command=None,
                           clock=lambda: 1.0)
    by_rest = SlurmQueue.from_slurmrestd(unix_socket=sock, clock=lambda: 1.0)
    snap = by_rest.poll()
    assert snap == by_squeue.poll() and by_rest.nodes == by_squeue.nodes
    assert sorted((j.name, j.state, j.expected_util) for j in snap.jobs) == [
        ("llm-serve", "running", 0.25), ("nightly", "pending", 0.5)]
    with pytest.raises(SlurmCommandFailed, match="returned error: 404"):
        SlurmQueue.from_slurmrestd(unix_socket=sock, api="v0.0.99").poll()


def test_real_unreachable_controller_raises_rather_than_reporting_an_empty_queue(cluster):
    conf = cluster.dir / "unreachable.conf"
    text = cluster.conf.read_text()
    port = next(line.split("=")[1] for line in text.splitlines()
                if line.startswith("SlurmctldPort="))
    conf.write_text(text.replace(f"SlurmctldPort={port}", "SlurmctldPort=1"))
    queue = SlurmQueue(timeout_s=60.0, env={"SLURM_CONF": str(conf)}, start_command=None,
                       nodes_command=None)
    with pytest.raises(SlurmOutputError, match="^squeue --json: Slurm reported errors: "
                       "slurm_load_jobs"):
        queue.poll()            # squeue exits 0 here, with the error and an empty job list
