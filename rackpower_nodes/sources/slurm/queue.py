"""Polling Slurm: run ``squeue --json`` (and its helpers) with a timeout, parse a snapshot.

:class:`SlurmQueue` is what the workload-events node calls each period::

    queue = SlurmQueue(timeout_s=5.0)
    events = queue.poll()          # WorkloadEvents; queue.skipped: jobs left out, and why

Each poll runs ``command`` (default ``squeue --json``) and, to place pending jobs on the hosts
backfill plans for them, ``start_command`` (``squeue --start``); the node sizes that turn a
job's CPUs and GPUs into a share of a host come from ``nodes_command`` (``sinfo --json``), run
on the first poll and every ``nodes_refresh_s`` after. A failure of the main command raises a
:class:`~.errors.SlurmError` subclass naming the command and what failed; a failure of a helper
is logged and the snapshot is made without it (pending jobs then bound only by
``required_nodes``, sizes from the last good ``sinfo`` or unknown).

:meth:`SlurmQueue.from_slurmrestd` polls Slurm's REST daemon instead (same JSON, through curl).
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from rackpower_nodes.core.workload_events import WorkloadEvents
from rackpower_nodes.sources.slurm.errors import (
    SlurmCommandFailed,
    SlurmCommandMissing,
    SlurmError,
    SlurmTimeout,
)
from rackpower_nodes.sources.slurm.squeue import (
    NodeSize,
    SkippedJob,
    parse_sched_nodes,
    parse_sinfo,
    parse_squeue,
)

__all__ = ["SlurmQueue", "run_command"]

_log = logging.getLogger(__name__)

SQUEUE = ("squeue", "--json")
SQUEUE_START = ("squeue", "--start", "--noheader", "--format=%i|%Y")
SINFO = ("sinfo", "--json")


def run_command(command: Sequence[str], timeout_s: float,
                env: Mapping[str, str] | None = None) -> str:
    """``command``'s stdout (text). Raises :class:`SlurmCommandMissing` (no such program),
    :class:`SlurmTimeout` (killed after ``timeout_s`` s) or :class:`SlurmCommandFailed`
    (non-zero exit, with its stderr)."""
    command = tuple(command)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env=None if env is None else dict(env), check=False)
    except FileNotFoundError as exc:
        raise SlurmCommandMissing(command, f"{command[0]!r} not found ({exc.strerror}); is "
                                  "slurm-client installed and on PATH?") from exc
    except PermissionError as exc:
        raise SlurmCommandMissing(command, f"{command[0]!r} is not executable ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmTimeout(command, f"no answer within {timeout_s:g} s (killed)") from exc
    if done.returncode != 0:
        raise SlurmCommandFailed(command, done.returncode, done.stderr)
    return done.stdout


class SlurmQueue:
    """Polls a Slurm controller's queue into :class:`WorkloadEvents` snapshots.

    ``command``: the queue query (``squeue --json`` or an equivalent printing the same JSON);
    ``timeout_s``: the limit for each command (s); ``start_command``/``nodes_command``: the
    helpers (None: not run); ``nodes``: fixed node sizes instead of ``nodes_command``;
    ``env``: the commands' environment (e.g. with ``SLURM_CONF``; None: this process's);
    ``clock``: the stamp of each snapshot (Unix s).
    """

    def __init__(self, command: Sequence[str] = SQUEUE, timeout_s: float = 10.0, *,
                 start_command: Sequence[str] | None = SQUEUE_START,
                 nodes_command: Sequence[str] | None = SINFO,
                 nodes: Mapping[str, NodeSize] | None = None,
                 nodes_refresh_s: float = 300.0,
                 env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time):
        if not command or not all(isinstance(c, str) and c for c in command):
            raise ValueError(f"SlurmQueue command={command!r}, expected a non-empty list of "
                             "arguments")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"SlurmQueue timeout_s={timeout_s!r}, expected > 0 s")
        self.command = tuple(command)
        self.timeout_s = float(timeout_s)
        self.start_command = None if start_command is None else tuple(start_command)
        self.nodes_command = None if nodes is not None or nodes_command is None \
            else tuple(nodes_command)
        self.nodes: dict[str, NodeSize] = dict(nodes or {})
        self.nodes_refresh_s = float(nodes_refresh_s)
        self.env = None if env is None else {**os.environ, **env}
        self.clock = clock
        self.skipped: tuple[SkippedJob, ...] = ()
        self._nodes_at = -math.inf

    @classmethod
    def from_slurmrestd(cls, url: str = "http://localhost", *, unix_socket: str | None = None,
                        headers_file: str | None = None, api: str = "v0.0.38",
                        timeout_s: float = 10.0, **kwargs) -> SlurmQueue:
        """A queue polled through slurmrestd instead of ``squeue``: ``GET
        <url>/slurm/<api>/jobs`` (the same JSON as ``squeue --json``) and ``.../nodes`` (as
        ``sinfo --json``), with curl (``--fail``: an HTTP error is a failed command).

        ``unix_socket``: slurmrestd's ``unix:`` socket (``rest_auth/local``);
        ``headers_file``: a file of request headers, e.g. ``X-SLURM-USER-NAME`` and
        ``X-SLURM-USER-TOKEN`` for ``rest_auth/jwt`` (read by curl, so the token never appears
        on a command line). slurmrestd has no ``squeue --start``: pending jobs are bound only by
        ``required_nodes``.
        """
        curl = ["curl", "--silent", "--show-error", "--fail", "--max-time", f"{timeout_s:g}"]
        if unix_socket:
            curl += ["--unix-socket", str(unix_socket)]
        if headers_file:
            curl += ["--header", f"@{headers_file}"]
        base = f"{url.rstrip('/')}/slurm/{api}"
        return cls((*curl, f"{base}/jobs"), timeout_s + 5.0, start_command=None,
                   nodes_command=(*curl, f"{base}/nodes"), **kwargs)

    def _helper(self, command: Sequence[str]) -> str | None:
        try:
            return run_command(command, self.timeout_s, self.env)
        except SlurmError as exc:
            _log.warning("Slurm helper failed, snapshot made without it: %s", exc)
            return None

    def _refresh_nodes(self, now: float) -> None:
        if self.nodes_command is None or now - self._nodes_at < self.nodes_refresh_s:
            return
        text = self._helper(self.nodes_command)
        if text is None:
            return
        try:
            self.nodes = parse_sinfo(text, " ".join(self.nodes_command))
            self._nodes_at = now
        except SlurmError as exc:
            _log.warning("Slurm helper output unusable, node sizes kept: %s", exc)

    def poll(self) -> WorkloadEvents:
        """One snapshot of the queue, stamped with ``clock()`` before the query.

        Raises a :class:`~.errors.SlurmError` subclass when the queue command is missing, times
        out, exits non-zero or prints something that is not its JSON. Jobs with a bad field are
        left out, logged, and listed in :attr:`skipped`.
        """
        stamp = self.clock()
        self._refresh_nodes(stamp)
        text = run_command(self.command, self.timeout_s, self.env)
        sched: dict[str, tuple[str, ...]] = {}
        if self.start_command is not None:
            start_text = self._helper(self.start_command)
            sched = parse_sched_nodes(start_text) if start_text else {}
        events, self.skipped = parse_squeue(text, stamp, self.nodes, sched,
                                            " ".join(self.command))
        return events
