"""Slurm as a workload-events source: the batch queue as :class:`WorkloadEvents` snapshots.

- :mod:`.queue`: :class:`SlurmQueue` (``.poll() -> WorkloadEvents``) runs ``squeue --json`` and
  its helpers with a timeout.
- :mod:`.squeue`: the pure parsing of their output (the field mapping is in its docstring and
  in docs/workload-events.md).
- :mod:`.hostlist`: Slurm hostlist expansion (``gpu[01-04]``).
- :mod:`.errors`: :class:`SlurmError` and its kinds (missing program, timeout, failed command,
  bad output) and :class:`SlurmJobError` (one bad job, skipped).
"""

from rackpower_nodes.sources.slurm.errors import (
    SlurmCommandFailed,
    SlurmCommandMissing,
    SlurmError,
    SlurmJobError,
    SlurmOutputError,
    SlurmTimeout,
)
from rackpower_nodes.sources.slurm.hostlist import HostlistError, expand_hostlist
from rackpower_nodes.sources.slurm.queue import SlurmQueue, run_command
from rackpower_nodes.sources.slurm.squeue import (
    UNLIMITED_S,
    NodeSize,
    SkippedJob,
    job_event,
    parse_sched_nodes,
    parse_sinfo,
    parse_squeue,
)

__all__ = [
    "UNLIMITED_S", "HostlistError", "NodeSize", "SkippedJob", "SlurmCommandFailed",
    "SlurmCommandMissing", "SlurmError", "SlurmJobError", "SlurmOutputError", "SlurmQueue",
    "SlurmTimeout", "expand_hostlist", "job_event", "parse_sched_nodes", "parse_sinfo",
    "parse_squeue", "run_command",
]
