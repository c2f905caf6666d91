"""`WorkloadEvents` messages to and from the core's snapshot
(:class:`rackpower_nodes.core.workload_events.WorkloadEvents`), both directions, pure.

Nodes only: `host_telemetry` publishes what its workload source reports, `predictor` hands what
it receives to its forecast service. Times are Unix seconds (NaN: an expected start the
scheduler does not give); the header stamp is the snapshot's.
"""
from __future__ import annotations

import math

from rackpower.msg import WorkloadEvents as WorkloadEventsMsg
from rackpower.msg import WorkloadJob

from rackpower_nodes.core.workload_events import JobEvent, WorkloadEvents, WorkloadEventsError

__all__ = ["WorkloadEventsError", "events_from_msg", "events_to_msg", "job_from_msg",
           "job_to_msg"]


def job_to_msg(job: JobEvent) -> WorkloadJob:
    return WorkloadJob(job_id=job.job_id, name=job.name, hosts=list(job.hosts), state=job.state,
                       start_unix=float(job.start_unix), duration_s=float(job.duration_s),
                       expected_util=float(job.expected_util), power_class=job.power_class)


def job_from_msg(msg: WorkloadJob) -> JobEvent:
    """The job of one message entry; WorkloadEventsError naming the job and the bad field."""
    return JobEvent(str(msg.job_id), str(msg.name), tuple(str(h) for h in msg.hosts),
                    str(msg.state), float(msg.start_unix), float(msg.duration_s),
                    float(msg.expected_util), str(msg.power_class))


def events_to_msg(events: WorkloadEvents, frame_id: str = "",
                  source: str | None = None) -> WorkloadEventsMsg:
    """The message of a snapshot: header stamp = ``events.stamp_unix``; ``source`` overrides
    the snapshot's own (e.g. "schedule" for a snapshot built by the static schedule)."""
    msg = WorkloadEventsMsg(source=events.source if source is None else source,
                            jobs=[job_to_msg(j) for j in events.jobs])
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = _split_stamp(events.stamp_unix)
    return msg


def events_from_msg(msg: WorkloadEventsMsg) -> WorkloadEvents:
    """The snapshot a message carries; WorkloadEventsError on an invalid job (the first one,
    named with its field and value)."""
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return WorkloadEvents(stamp, tuple(job_from_msg(j) for j in msg.jobs), str(msg.source))


def _split_stamp(t_unix: float) -> tuple[int, int]:
    if not math.isfinite(t_unix) or t_unix < 0:
        raise WorkloadEventsError(f"stamp_unix={t_unix!r}: expected a finite Unix time >= 0")
    sec, nsec = divmod(round(t_unix * 1e9), 10**9)
    return int(sec), int(nsec)
