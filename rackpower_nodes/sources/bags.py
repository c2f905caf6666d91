"""Training data from rosbag2 bags (sqlite3 or MCAP), read with rosbags.

:func:`from_bag` turns a bag recorded by the ``recorder`` node (``/<ns>/power_samples`` and
``/<ns>/host_telemetry``) into :class:`~rackpower_nodes.core.forecast.series.ComponentSeries`:
each channel is one component; a batch after lost frames or a sequence jump starts a new
segment, as does a time gap; host telemetry is matched by ``host_id`` == component id.
:func:`message_typestore` registers rackpower's message types from their ``.msg`` text (the
checkout's ``msg/`` or the installed ``share/rackpower/msg``), so bags without embedded
definitions read too; :func:`job_log_from_bag` turns the recorded ``workload_events`` into a
:class:`~rackpower_nodes.core.workload_events.JobLog` (``from_bag`` attaches it to every series
as ``events``); :func:`allocation_errors_from_bags` reads the logged
``AllocationError`` messages the retraining weights its windows with. The numbers come from
the messages through the same helpers the live predictor uses
(:mod:`rackpower_nodes.core.forecast.messages`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from rackpower_nodes.core.forecast.messages import (
    SequenceCheck,
    lost_frames_tolerance_s,
    metrics_vector,
    sample_times,
    samples_power,
    stamp_unix,
)
from rackpower_nodes.core.forecast.series import (
    TELEMETRY,
    ComponentSeries,
    DatasetError,
    estimate_spec,
    hold_telemetry,
    pinned,
    split_on_gaps,
    step_index,
)
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import (
    JobEvent,
    JobLog,
    JobRecord,
    WorkloadEvents,
    WorkloadEventsError,
)

__all__ = [
    "POWER_TYPE", "TELEMETRY_TYPE", "WORKLOAD_TYPE", "DatasetError",
    "allocation_errors_from_bags", "from_bag", "job_log_from_bag", "job_log_from_snapshots",
    "message_typestore",
]


def _msg_folder() -> Path:
    import sys

    for folder in (Path(__file__).resolve().parents[2] / "msg",
                   Path(sys.prefix) / "share" / "rackpower" / "msg"):
        if (folder / "PowerSamples.msg").is_file():
            return folder
    raise DatasetError("rackpower msg/*.msg not found beside the checkout or in "
                       f"{sys.prefix}/share/rackpower/msg")


def message_typestore():
    """A rosbags typestore: std_msgs of ROS 2 Kilted (Humble where rosbags lacks it) plus
    rackpower's HostMetrics, HostTelemetry, PowerSamples, PowerAllocation, WorkloadJob,
    WorkloadEvents and ComponentHealth from their .msg text."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.ROS2_HUMBLE))
    folder, types = _msg_folder(), {}
    for name in ("HostMetrics", "HostTelemetry", "PowerSamples", "PowerAllocation",
                 "WorkloadJob", "WorkloadEvents", "ComponentHealth"):
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(),
                                        f"rackpower/msg/{name}"))
    store.register(types)
    return store


POWER_TYPE, TELEMETRY_TYPE = "rackpower/msg/PowerSamples", "rackpower/msg/HostTelemetry"
ALLOCATION_TYPE = "rackpower/msg/PowerAllocation"
WORKLOAD_TYPE = "rackpower/msg/WorkloadEvents"
HEALTH_TYPE = "rackpower/msg/ComponentHealth"


def from_bag(path: str | Path, step_s: float = 0.1, namespace: str | None = None,
             specs: Mapping[str, tuple[float, float]] | None = None,
             schedule: WorkloadSchedule | None = None) -> list[ComponentSeries]:
    """Series from a rosbag2 bag (sqlite3 or MCAP) with ``/<ns>/power_samples`` and
    ``/<ns>/host_telemetry``. Each channel is one component; a batch after lost frames or a
    sequence jump starts a new segment, as does a time gap. Host telemetry is matched by
    ``host_id`` == component id. ``namespace`` picks one rack when the bag holds several.
    Where the bag holds the rack's ``power_allocation``, steps with a sample held at the
    allocation in force (``held_w``, else ``allocated_w``, of the newest allocation stamped
    before it) are marked ``censored``: the cap, not the demand. Where it holds the rack's
    ``workload_events``, every series carries them as ``events`` (:func:`job_log_from_bag`)."""
    from rosbags.highlevel import AnyReaderError

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"bag {path} does not exist")
    try:
        pieces, tele, alloc = _read_bag(path, namespace, lost_frames_tolerance_s(step_s))
    except AnyReaderError as exc:
        raise DatasetError(f"bag {path}: {exc}") from exc
    events = job_log_from_bag(path, namespace)
    out: list[ComponentSeries] = []
    for name, chunks in pieces.items():
        out.extend(_bag_component(name, chunks, tele.get(name, []), step_s, specs, schedule,
                                  str(path), alloc.get(name, []), events or None))
    return out


def _read_bag(path: Path, namespace: str | None, tolerance_s: float) -> tuple[dict, dict]:
    """Per component: power chunks ``(piece, t, power)`` (a new piece after every sequence
    break) and telemetry ``(t, values)``, in bag order."""
    from rosbags.highlevel import AnyReader

    pieces: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    tele: dict[str, list[tuple[float, np.ndarray]]] = {}
    alloc: dict[str, list[tuple[float, float]]] = {}
    check, piece = SequenceCheck(tolerance_s), 0
    with AnyReader([path], default_typestore=message_typestore()) as reader:
        for conn, _, raw in reader.messages(connections=_bag_topics(reader, namespace, path)):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype == ALLOCATION_TYPE:
                t = stamp_unix(msg.header.stamp)
                held = np.asarray(msg.held_w, dtype=np.float64)
                ref = np.asarray(msg.allocated_w, dtype=np.float64)
                if held.shape == ref.shape:
                    ref = np.where(np.isfinite(held), held, ref)
                for name, w in zip(msg.channel_ids, ref):
                    alloc.setdefault(name, []).append((t, float(w)))
                continue
            if conn.msgtype == TELEMETRY_TYPE:
                t = stamp_unix(msg.header.stamp)
                for host in msg.hosts:
                    tele.setdefault(host.host_id, []).append((t, metrics_vector(host)))
                continue
            piece += check.is_break(msg.first_sequence, msg.sample_count, msg.frames_lost,
                                    msg.sample_period_s)
            t0, period, ids, power = samples_power(msg)
            t = sample_times(t0, period, power.shape[1])
            for c, name in enumerate(ids):
                pieces.setdefault(name, []).append((piece, t, power[c]))
    return pieces, tele, alloc


def _topic(namespace: str, base: str) -> str:
    """``/<namespace>/<base>`` (``/<base>`` for the empty namespace)."""
    return "/" + "/".join(p for p in (namespace.strip("/"), base) if p)


def _bag_topics(reader, namespace: str | None, path: Path) -> list:
    """The PowerSamples connections of one rack and its HostTelemetry connections."""
    def pick(msgtype: str, base: str) -> list:
        found = [c for c in reader.connections if c.msgtype == msgtype]
        if namespace is not None:
            found = [c for c in found if c.topic == _topic(namespace, base)]
        return found

    power = pick(POWER_TYPE, "power_samples")
    topics = sorted({c.topic for c in power})
    if len(topics) != 1:
        seen = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
        raise DatasetError(f"bag {path}: PowerSamples topics {topics} for namespace "
                           f"{namespace!r}, expected exactly one (topics: {seen}); pass "
                           "namespace= to choose a rack")
    prefix = topics[0].rsplit("/", 1)[0]
    same_rack = [c for c in pick(TELEMETRY_TYPE, "host_telemetry")
                 + pick(ALLOCATION_TYPE, "power_allocation")
                 if c.topic.rsplit("/", 1)[0] == prefix]
    return power + same_rack


def _in_force(t: np.ndarray, alloc: list) -> np.ndarray:
    """The allocation in force (W) at each time `t`: the newest stamped at or before it (NaN
    before the first one or without any)."""
    if not alloc:
        return np.full(len(t), np.nan)
    at = np.array([a[0] for a in alloc])
    order = np.argsort(at, kind="stable")
    w = np.array([a[1] for a in alloc])[order]
    i = np.searchsorted(at[order], t, side="right") - 1
    return np.where(i >= 0, w[np.maximum(i, 0)], np.nan)


def _bag_component(name: str, chunks: list, tele: list, step_s: float,
                   specs: Mapping | None, schedule: WorkloadSchedule | None,
                   source: str, alloc: list = (),
                   events: JobLog | None = None) -> list[ComponentSeries]:
    ids = np.array([c[0] for c in chunks])
    t_all = np.concatenate([c[1] for c in chunks])
    p_all = np.concatenate([c[2] for c in chunks])
    piece_of = np.repeat(ids, [len(c[1]) for c in chunks])
    spec = (specs or {}).get(name) or estimate_spec(p_all)
    msg_t = np.array([m[0] for m in tele], dtype=np.float64)
    msg_v = np.array([m[1] for m in tele]).reshape(len(tele), len(TELEMETRY))
    out: list[ComponentSeries] = []
    held = pinned(p_all, _in_force(t_all, list(alloc))).astype(np.float64)
    for k in dict.fromkeys(ids.tolist()):
        sel = (piece_of == k) & np.isfinite(p_all)
        for t0, p, h in split_on_gaps(t_all[sel], p_all[sel], held[sel], step_s=step_s):
            steps = step_index(t0, step_s) + np.arange(len(p))
            tel = hold_telemetry(steps, msg_t, msg_v, step_s)
            out.append(ComponentSeries(name, t0, step_s, p, tel, *spec, schedule, source,
                                       censored=h > 0, events=events))
    return out


def allocation_errors_from_bags(paths: Iterable[str | Path], namespace: str | None = None
                                ) -> list[tuple[float, str, float]]:
    """(t_unix, component, |error_w|) of every finite AllocationError in the bags (only
    ``/<ns>/allocation_error``'s with ``namespace``, for a bag of several racks)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_types_from_msg

    store = message_typestore()
    text = (_msg_folder() / "AllocationError.msg").read_text()
    store.register(get_types_from_msg(text, "rackpower/msg/AllocationError"))
    out = []
    for path in paths:
        with AnyReader([Path(path)], default_typestore=store) as reader:
            conns = [c for c in reader.connections
                     if c.msgtype == "rackpower/msg/AllocationError"
                     and (namespace is None or c.topic == _topic(namespace, "allocation_error"))]
            if not conns:            # an empty list would make rosbags read every message
                continue
            for conn, _, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                err = float(msg.error_w)
                if math.isfinite(err):
                    t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                    out.append((t, str(msg.channel_id), abs(err)))
    return out


def job_log_from_bag(path: str | Path, namespace: str | None = None) -> JobLog:
    """The job history of a bag's ``workload_events`` (``/<ns>/workload_events`` with
    ``namespace``, else every WorkloadEvents topic); empty when it has none. DatasetError
    naming the message on an invalid job."""
    from rosbags.highlevel import AnyReader

    want = None if namespace is None else "/" + "/".join(
        p for p in (namespace.strip("/"), "workload_events") if p)
    snapshots = []
    with AnyReader([Path(path)], default_typestore=message_typestore()) as reader:
        conns = [c for c in reader.connections if c.msgtype == WORKLOAD_TYPE
                 and (want is None or c.topic == want)]
        if not conns:                 # an empty list would make rosbags read every message
            return JobLog()
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            try:
                snapshots.append(WorkloadEvents(stamp_unix(msg.header.stamp), tuple(
                    JobEvent(j.job_id, j.name, tuple(j.hosts), j.state, float(j.start_unix),
                             float(j.duration_s), float(j.expected_util), j.power_class)
                    for j in msg.jobs), msg.source))
            except WorkloadEventsError as exc:
                raise DatasetError(f"bag {path}: {conn.topic}: {exc}") from exc
    return job_log_from_snapshots(snapshots)


def job_log_from_snapshots(snapshots: Iterable[WorkloadEvents]) -> JobLog:
    """A JobLog replaying what the snapshots said, never earlier than they said it.

    A job's record starts at the first snapshot that places it (hosts known, and running or
    pending with an expected start), and its hosts, expected start, duration, size and class
    are that snapshot's; its start is the first running snapshot's ``start_unix``; it ends at
    the first snapshot after its last appearance (NaN when the last snapshot still has it).
    """
    ordered = sorted(snapshots, key=lambda s: s.stamp_unix)
    first: dict[str, tuple[float, JobEvent]] = {}
    started: dict[str, float] = {}
    last_seen: dict[str, int] = {}
    for i, snap in enumerate(ordered):
        for job in snap.jobs:
            last_seen[job.job_id] = i
            placed = job.hosts and (job.state == "running" or math.isfinite(job.start_unix))
            if placed and job.job_id not in first:
                first[job.job_id] = (snap.stamp_unix, job)
            if job.state == "running":
                started.setdefault(job.job_id, job.start_unix)
    records = []
    for job_id, (seen_at, job) in first.items():
        i = last_seen[job_id] + 1
        end = ordered[i].stamp_unix if i < len(ordered) else math.nan
        expected = job.start_unix if job.state == "pending" else math.nan
        records.append(JobRecord(job_id, job.name, job.hosts, seen_at, expected,
                                 started.get(job_id, math.nan), end, job.duration_s,
                                 job.expected_util, job.power_class))
    return JobLog(records)
