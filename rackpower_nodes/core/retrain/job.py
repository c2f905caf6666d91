"""Off-peak retraining, part 4: the training job in its own process, watched without blocking.

:class:`RetrainJob` starts ``python -m rackpower_nodes.tools.retrain_job`` (:data:`JOB_MODULE`,
run by name: this module imports no tool) with a request file in its work folder, and polls
it for its report, killing it when it runs over its time or memory limit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rackpower_nodes.core.retrain.policy import RetrainError

__all__ = ["JOB_MODULE", "RetrainJob"]

JOB_MODULE = "rackpower_nodes.tools.retrain_job"


class RetrainJob:
    """One training job in its own process, watched without blocking.

    ``request`` is the JSON-able job description (see rackpower_nodes.tools.retrain_job); it is
    written to ``workdir/request.json``, the job writes ``report.json``, ``progress.json`` and
    its log ``job.log`` there. ``max_seconds`` (wall s) and ``max_rss_mb`` (MB, resident set
    of the job) are enforced by :meth:`poll`, which kills a job that exceeds them.
    """

    def __init__(self, request: dict, workdir: str | Path, max_seconds: float = 1800.0,
                 max_rss_mb: float = 2048.0, python: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.request = dict(request, report=str(self.workdir / "report.json"),
                            progress=str(self.workdir / "progress.json"))
        self.max_seconds, self.max_rss_mb = float(max_seconds), float(max_rss_mb)
        self.python = python or sys.executable
        self.proc = None
        self.started = 0.0
        self.peak_rss_mb = 0.0

    def start(self) -> RetrainJob:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "request.json").write_text(json.dumps(self.request, indent=1))
        log = open(self.workdir / "job.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", JOB_MODULE, "--request", str(self.workdir / "request.json")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=_job_env())
        finally:
            log.close()
        self.started = time.monotonic()
        return self

    def stage(self) -> str:
        """The job's own account of its stage (loading, training, evaluating, done)."""
        try:
            return str(json.loads((self.workdir / "progress.json").read_text())["stage"])
        except (OSError, ValueError, KeyError, TypeError):
            return "starting"

    def poll(self) -> dict | None:
        """None while the job runs; then its report (``ok`` true/false, ``error`` on failure).
        A job over its time or memory limit is killed and reported as failed."""
        if self.proc is None:
            raise RetrainError("RetrainJob.poll before start")
        code = self.proc.poll()
        if code is None:
            over = self._over_limit(time.monotonic() - self.started)
            if over is None:
                return None
            self.cancel()
            return {"ok": False, "error": over}
        try:
            report = json.loads(Path(self.request["report"]).read_text())
        except (OSError, ValueError):
            report = {"ok": False}
        if code != 0 or not report.get("ok"):
            report["ok"] = False
            report.setdefault("error", f"retrain job exited with code {code}: {self.log_tail()}")
        return report

    def _over_limit(self, elapsed: float) -> str | None:
        import psutil

        if elapsed > self.max_seconds:
            return f"retrain job ran {elapsed:.0f} s, over max_seconds={self.max_seconds:.0f}"
        try:
            rss = psutil.Process(self.proc.pid).memory_info().rss / 1e6
        except psutil.Error:
            return None
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if rss > self.max_rss_mb:
            return f"retrain job used {rss:.0f} MB, over max_rss_mb={self.max_rss_mb:.0f}"
        return None

    def cancel(self) -> None:
        """Kill the job (if running) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 600) -> str:
        try:
            text = (self.workdir / "job.log").read_text(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text[-chars:]


def _job_env() -> dict[str, str]:
    """This environment, with this package's folder first on PYTHONPATH, so the job runs the
    same code as its parent."""
    import rackpower_nodes

    here = str(Path(rackpower_nodes.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH", "")]))
    return env

