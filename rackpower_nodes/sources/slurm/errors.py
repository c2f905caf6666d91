"""The Slurm adapter's errors: each names the command (or document) and what failed."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SlurmCommandFailed", "SlurmCommandMissing", "SlurmError", "SlurmJobError",
           "SlurmOutputError", "SlurmTimeout"]


def _cmd(command: Sequence[str] | str) -> str:
    return command if isinstance(command, str) else " ".join(command)


class SlurmError(RuntimeError):
    """A Slurm query that gave no snapshot; ``command`` is what was run (or read)."""

    def __init__(self, command: Sequence[str] | str, what: str):
        self.command = _cmd(command)
        super().__init__(f"{self.command}: {what}")


class SlurmCommandMissing(SlurmError):
    """The command's program is not installed (or not executable)."""


class SlurmTimeout(SlurmError):
    """The command ran longer than its timeout and was killed."""


class SlurmCommandFailed(SlurmError):
    """The command exited non-zero; ``returncode`` and ``stderr`` say how."""

    def __init__(self, command: Sequence[str] | str, returncode: int, stderr: str):
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip()[-500:] or "(no stderr)"
        super().__init__(command, f"exit status {returncode}: {tail}")


class SlurmOutputError(SlurmError):
    """The command's output is not the JSON document expected (bad JSON, wrong shape)."""


class SlurmJobError(ValueError):
    """One job with a bad field; the queue's other jobs are kept. Names job, field and value."""

    def __init__(self, job_id: str, field: str, value, expected: str):
        self.job_id, self.field, self.value = job_id, field, value
        super().__init__(f"job {job_id}: {field}={value!r}, expected {expected}")
