"""Optional real-time settings for an acquisition thread, applied where the OS permits.

Each setting is tried separately and reported: a rack controller without CAP_SYS_NICE or
CAP_IPC_LOCK still runs, and its diagnostics say which setting did not take and why.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

_MCL_CURRENT = 1
_MCL_FUTURE = 2


@dataclass(frozen=True)
class RealtimeReport:
    """Outcome of one setting: `applied` False with `detail` saying why when it failed."""

    setting: str
    applied: bool
    detail: str


def apply_realtime(sched_priority: int, cpu_affinity: tuple[int, ...],
                   lock_memory: bool) -> list[RealtimeReport]:
    """Apply the requested settings to the calling thread (memory locking: whole process).

    Args:
        sched_priority: 0 leaves the scheduler alone; 1..99 requests SCHED_FIFO at that priority.
        cpu_affinity: CPU ids for the calling thread; empty leaves affinity alone.
        lock_memory: lock current and future pages (mlockall) so page faults cannot stall reads.
    """
    reports = []
    if sched_priority > 0:
        reports.append(_try("sched_fifo", lambda: os.sched_setscheduler(
            0, os.SCHED_FIFO, os.sched_param(sched_priority)), f"priority {sched_priority}"))
    if cpu_affinity:
        reports.append(_try("cpu_affinity", lambda: os.sched_setaffinity(0, set(cpu_affinity)),
                            f"cpus {sorted(cpu_affinity)}"))
    if lock_memory:
        reports.append(_try("lock_memory", _mlockall, "mlockall(MCL_CURRENT|MCL_FUTURE)"))
    return reports


def _try(setting: str, action, what: str) -> RealtimeReport:
    try:
        action()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return RealtimeReport(setting, False, f"{what} not applied: {reason}")
    return RealtimeReport(setting, True, f"{what} applied")


def _mlockall() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err) if err else errno.errorcode.get(err, "unknown"))
