"""Slurm's job queue (``squeue --json``, Slurm 22.05, OpenAPI v0.0.38) -> WorkloadEvents.

Pure parsing, no subprocess: :class:`~.queue.SlurmQueue` runs the commands and calls these.
The mapping (docs/workload-events.md has it as a table):

- **job id**: ``job_id``; an array task ``<array_job_id>_<task>``, a pending array
  ``<array_job_id>_[<tasks>]``, a heterogeneous component ``<het_job_id>+<offset>`` (the ids
  ``squeue`` prints).
- **state**: ``PENDING``/``CONFIGURING`` -> ``"pending"``, ``RUNNING``/``COMPLETING`` ->
  ``"running"``; every other state (suspended, finished, failed...) is left out: it draws no
  job power.
- **hosts**: the Slurm hostlist in ``nodes`` (expanded); for a pending job, ``required_nodes``
  (``sbatch -w``), else the nodes backfill plans for it (``squeue --start``'s SCHEDNODES, given
  as ``sched_nodes``), else none: the job is in the snapshot but bound to no host, so no host's
  forecast reads it.
- **start**: ``start_time`` (Unix s); for a pending job the expected start backfill (or
  ``--begin``) set, NaN while it is 0 (no estimate yet).
- **duration**: ``time_limit`` (minutes) x 60; ``UNLIMITED`` -> :data:`UNLIMITED_S`.
- **expected_util**: the largest share of a host the job holds: its CPUs per node over the
  node's CPUs and its GPUs per node over the node's GPUs (node sizes from ``sinfo --json``, see
  :func:`parse_sinfo`), the largest over its hosts; 1.0 (the whole host, the safe side for a
  power budget) when its hosts or their sizes are unknown.
- **power_class**: ``power_class=<class>`` in the job's ``comment`` (``sbatch
  --comment power_class=gpu-infer``) wins; else a job with a GPU request (``--gres=gpu:N``,
  ``--gpus``, ``--gpus-per-node``...) is ``gpu-infer`` when its name says so (a word
  ``infer``, ``inference``, ``serve`` or ``serving``, e.g. ``llm-serve``) and ``gpu-train``
  otherwise; a job without GPUs is ``cpu``.

Later Slurm versions write numbers as ``{"set": .., "infinite": .., "number": ..}`` and states as
lists; both shapes are read. A job with a bad field is skipped (:class:`SkippedJob` names it and
the field) and the rest of the queue is kept.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rackpower_nodes.core.workload_events import (
    POWER_CLASSES,
    JobEvent,
    WorkloadEvents,
    WorkloadEventsError,
)
from rackpower_nodes.sources.slurm.errors import SlurmJobError, SlurmOutputError
from rackpower_nodes.sources.slurm.hostlist import HostlistError, expand_hostlist

__all__ = ["UNLIMITED_S", "NodeSize", "SkippedJob", "gpus_in_tres", "job_event", "job_id_of",
           "parse_sched_nodes", "parse_sinfo", "parse_squeue"]

_log = logging.getLogger(__name__)

UNLIMITED_S = 7 * 86400.0       # the expected duration of a job without a time limit (s)
PENDING_STATES = ("PENDING", "CONFIGURING")
RUNNING_STATES = ("RUNNING", "COMPLETING")
_COMMENT_CLASS = re.compile(r"power_class\s*[=:]\s*([\w-]*)")
_INFER_NAME = re.compile(r"(?:^|[^a-z0-9])(infer|inference|serve|serving)(?:$|[^a-z0-9])")


@dataclass(frozen=True)
class NodeSize:
    """What one Slurm node holds: ``cpus`` (Slurm CPUs) and ``gpus`` (its ``gpu`` GRES)."""

    cpus: int
    gpus: int = 0


@dataclass(frozen=True)
class SkippedJob:
    """A job left out of a snapshot and why (the field and its value)."""

    job_id: str
    reason: str


def _loads(data, source: str):
    if isinstance(data, (str, bytes, bytearray)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise SlurmOutputError(source, f"not valid JSON ({exc})") from exc
    if not isinstance(data, Mapping):
        raise SlurmOutputError(source, f"expected a JSON object, got {type(data).__name__}")
    return data


def _list_of(data: Mapping, key: str, source: str) -> list:
    errors = data.get("errors") or []
    if errors:          # e.g. slurmctld down: exit status 0, these errors, and no jobs
        said = "; ".join(_error_text(e) for e in errors) if isinstance(errors, list) \
            else repr(errors)
        raise SlurmOutputError(source, f"Slurm reported errors: {said}")
    value = data.get(key)
    if not isinstance(value, list):
        raise SlurmOutputError(source, f"{key!r} is {value!r}, expected a list")
    return value


def _error_text(error) -> str:
    if not isinstance(error, Mapping):
        return repr(error)
    parts = [str(error[k]) for k in ("source", "description", "error") if error.get(k)]
    return ": ".join(parts) or repr(error)


def _number(job: Mapping, key: str, job_id: str, *, allow_unset: bool = False) -> float | None:
    """A Slurm number: int/float, or {"set", "infinite", "number"}; None: unset or infinite."""
    value = job.get(key)
    if isinstance(value, Mapping):
        if value.get("infinite"):
            return None
        if not value.get("set", True):
            value = None
        else:
            value = value.get("number")
    if value is None and allow_unset:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SlurmJobError(job_id, key, value, "a number")
    return float(value)


def _text(job: Mapping, key: str, job_id: str) -> str:
    value = job.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SlurmJobError(job_id, key, value, "a string")
    return value


def job_id_of(job: Mapping) -> str:
    """The id ``squeue`` prints for ``job`` (array task, pending array, het component)."""
    raw = job.get("job_id")
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise SlurmJobError(repr(raw), "job_id", raw, "a positive integer")
    array_id, task = job.get("array_job_id") or 0, job.get("array_task_id")
    if isinstance(task, Mapping):
        task = task.get("number") if task.get("set", True) else None
    tasks = job.get("array_task_string") or ""
    if isinstance(array_id, int) and array_id > 0:
        if isinstance(task, int):
            return f"{array_id}_{task}"
        if isinstance(tasks, str) and tasks:
            return f"{array_id}_[{tasks}]"
    het_id = job.get("het_job_id") or 0
    if isinstance(het_id, int) and het_id > 0:
        return f"{het_id}+{job.get('het_job_offset') or 0}"
    return str(raw)


def _state(job: Mapping, job_id: str) -> str:
    value = job.get("job_state")
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[0]
    if not isinstance(value, str) or not value:
        raise SlurmJobError(job_id, "job_state", value, "a state name such as 'RUNNING'")
    return value.upper()


def _hosts(expr: str, key: str, job_id: str) -> tuple[str, ...]:
    try:
        return expand_hostlist(expr)
    except HostlistError as exc:
        raise SlurmJobError(job_id, key, expr, f"a Slurm hostlist ({exc})") from exc


def gpus_in_tres(tres: str) -> int | None:
    """GPUs in a TRES request string (``gres:gpu:4``, ``gres/gpu=2``, ``gres:gpu:a100:1``,
    comma-separated); None when it names none."""
    total = None
    for item in tres.split(","):
        parts = item.strip().replace("gres/", "gres:").replace("=", ":").split(":")
        if parts[0] == "gres":
            parts = parts[1:]
        if parts and parts[0] == "gpu":
            count = parts[-1] if len(parts) > 1 and parts[-1].isdigit() else "1"
            total = (total or 0) + int(count)
    return total


def _gpus_per_node(job: Mapping, job_id: str, n_nodes: float) -> float | None:
    per_node = gpus_in_tres(_text(job, "tres_per_node", job_id))
    if per_node is not None:
        return float(per_node)
    per_job = gpus_in_tres(_text(job, "tres_per_job", job_id))
    if per_job is not None:
        return per_job / n_nodes
    per_task = gpus_in_tres(_text(job, "tres_per_task", job_id))
    if per_task is not None:
        tasks = _number(job, "tasks", job_id, allow_unset=True) or 1.0
        return per_task * tasks / n_nodes
    return None


def _power_class(job: Mapping, job_id: str, name: str, gpus: float | None) -> str:
    m = _COMMENT_CLASS.search(_text(job, "comment", job_id))
    if m:
        if m.group(1) in POWER_CLASSES:
            return m.group(1)
        _log.warning("slurm job %s: comment power_class=%r is not one of %s; ignored",
                     job_id, m.group(1), POWER_CLASSES)
    if gpus:
        return "gpu-infer" if _INFER_NAME.search(name.lower()) else "gpu-train"
    return "cpu"


def _util(hosts: tuple[str, ...], cpus_per_node: float | None, gpus_per_node: float | None,
          nodes: Mapping[str, NodeSize]) -> float:
    shares = []
    for host in hosts:
        size = nodes.get(host)
        if size is None:
            return 1.0
        if cpus_per_node is not None and size.cpus > 0:
            shares.append(cpus_per_node / size.cpus)
        if gpus_per_node and size.gpus > 0:
            shares.append(gpus_per_node / size.gpus)
    return min(max(shares), 1.0) if shares else 1.0


def job_event(job: Mapping, nodes: Mapping[str, NodeSize] | None = None,
              sched_nodes: Mapping[str, tuple[str, ...]] | None = None) -> JobEvent | None:
    """One ``squeue --json`` job as a JobEvent; None for a state that draws no job power.

    Raises :class:`SlurmJobError` naming the job, the field and its value when a field is bad.
    """
    if not isinstance(job, Mapping):
        raise SlurmJobError("?", "job", job, "a JSON object")
    job_id = job_id_of(job)
    state = _state(job, job_id)
    if state not in PENDING_STATES + RUNNING_STATES:
        return None
    running = state in RUNNING_STATES
    name = _text(job, "name", job_id)
    hosts = _hosts(_text(job, "nodes", job_id), "nodes", job_id)
    if not hosts and not running:
        hosts = (_hosts(_text(job, "required_nodes", job_id), "required_nodes", job_id)
                 or tuple((sched_nodes or {}).get(job_id, ())))
    if running and not hosts:
        raise SlurmJobError(job_id, "nodes", job.get("nodes"), f"hosts for a {state} job")
    start = _number(job, "start_time", job_id, allow_unset=True)
    if running and not start:
        raise SlurmJobError(job_id, "start_time", job.get("start_time"),
                            f"a Unix time for a {state} job")
    limit_min = _number(job, "time_limit", job_id, allow_unset=True)
    if limit_min is not None and limit_min < 0:
        raise SlurmJobError(job_id, "time_limit", limit_min, "minutes >= 0")
    n_nodes = _number(job, "node_count", job_id, allow_unset=True) or float(len(hosts) or 1)
    if n_nodes <= 0:
        raise SlurmJobError(job_id, "node_count", n_nodes, "a count > 0")
    cpus = _number(job, "cpus", job_id, allow_unset=True)
    gpus = _gpus_per_node(job, job_id, n_nodes)
    util = _util(hosts, None if cpus is None else cpus / n_nodes, gpus, nodes or {})
    try:
        return JobEvent(job_id, name, hosts, "running" if running else "pending",
                        start if start else math.nan,
                        UNLIMITED_S if limit_min is None else limit_min * 60.0, util,
                        _power_class(job, job_id, name, gpus))
    except WorkloadEventsError as exc:
        raise SlurmJobError(job_id, "job", str(exc), "a valid job") from exc


def parse_squeue(data, stamp_unix: float, nodes: Mapping[str, NodeSize] | None = None,
                 sched_nodes: Mapping[str, tuple[str, ...]] | None = None,
                 source: str = "squeue --json") -> tuple[WorkloadEvents, tuple[SkippedJob, ...]]:
    """The snapshot of ``squeue --json`` output (text or parsed) taken at ``stamp_unix``.

    Returns the snapshot (source ``"slurm"``) and the jobs skipped for a bad field, each also
    logged as a warning. Raises :class:`SlurmOutputError` when the document itself is bad (not
    JSON, not an object, no ``jobs`` list) or carries Slurm's ``errors``: with slurmctld down,
    ``squeue --json`` exits 0 with an error and an empty job list, which must not read as
    "nothing queued".
    """
    data = _loads(data, source)
    events, skipped = [], []
    for raw in _list_of(data, "jobs", source):
        try:
            event = job_event(raw, nodes, sched_nodes)
        except SlurmJobError as exc:
            _log.warning("%s: skipped %s", source, exc)
            skipped.append(SkippedJob(exc.job_id, str(exc)))
            continue
        if event is not None:
            events.append(event)
    return WorkloadEvents(float(stamp_unix), tuple(events), "slurm"), tuple(skipped)


def parse_sinfo(data, source: str = "sinfo --json") -> dict[str, NodeSize]:
    """Node name -> :class:`NodeSize` from ``sinfo --json``; a node with bad fields is left
    out (its jobs then count as whole-host) with a warning."""
    data = _loads(data, source)
    out: dict[str, NodeSize] = {}
    for node in _list_of(data, "nodes", source):
        name = node.get("name") if isinstance(node, Mapping) else None
        cpus = node.get("cpus") if isinstance(node, Mapping) else None
        if not isinstance(name, str) or not name or isinstance(cpus, bool) \
                or not isinstance(cpus, int) or cpus < 0:
            _log.warning("%s: node %r left out: name %r / cpus %r", source, node, name, cpus)
            continue
        gres = node.get("gres") if isinstance(node.get("gres"), str) else ""
        out[name] = NodeSize(cpus, gpus_in_tres(re.sub(r"\(.*?\)", "", gres)) or 0)
    return out


def parse_sched_nodes(text: str) -> dict[str, tuple[str, ...]]:
    """Job id -> planned hosts from ``squeue --start --noheader --format=%i|%Y`` lines
    (``(null)`` or a bad hostlist: no entry)."""
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        job_id, sep, expr = line.strip().partition("|")
        if not sep:
            continue
        try:
            hosts = expand_hostlist(expr)
        except HostlistError as exc:
            _log.warning("squeue --start: job %s: %s", job_id, exc)
            continue
        if hosts:
            out[job_id] = hosts
    return out
