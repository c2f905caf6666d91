"""A real Slurm cluster on loopback for the Slurm adapter's tests.

:class:`SlurmCluster` starts, in a fresh temporary directory, ``munged`` (its own key and
socket), ``slurmctld`` and one ``slurmd -N <node>`` per node (Debian's Slurm 22.05 runs several
slurmd on one machine with ``-N``), every daemon in the foreground on free loopback ports, with
a ``slurm.conf`` that fakes the node sizes (``SlurmdParameters=config_overrides``) and the GPUs
(a ``gres.conf`` pointing at plain files: slurmd logs that they are not devices and counts them);
each node has the feature ``gpu`` or ``cpu`` (``sbatch --constraint=cpu``).
Clients reach it through ``SLURM_CONF`` in :attr:`SlurmCluster.env`.

Starting waits until ``sinfo`` shows every node idle; :meth:`SlurmCluster.stop` cancels every
job, waits until the queue is empty (so no slurmstepd or job is left behind), then terminates
the daemons it started, by their process ids. Every wait polls a condition with a deadline.

The daemons need root (slurmd starts jobs as their user); :func:`missing_prerequisites` says
why the cluster cannot run here (missing programs, not root), for the tests to skip with.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

__all__ = ["CLIENTS", "DAEMONS", "REST", "NodeSpec", "SlurmCluster", "missing_prerequisites",
           "missing_rest", "wait_for"]

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
REST = ("slurmrestd", "curl")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")
APT_HINT = "apt-get install slurmctld slurmd slurm-client munge"


@dataclass(frozen=True)
class NodeSpec:
    """One fake node: its name, Slurm CPUs and GPUs (``gpu`` GRES)."""

    name: str
    cpus: int = 4
    gpus: int = 0


DEFAULT_NODES = (NodeSpec("gpu01", 4, 4), NodeSpec("gpu02", 4, 4), NodeSpec("cpu01", 4, 0))


def missing_prerequisites() -> str | None:
    """Why a real cluster cannot start here (None: it can)."""
    missing = [p for p in DAEMONS + CLIENTS if shutil.which(p) is None
               and not os.path.exists(f"/usr/sbin/{p}")]
    if missing:
        return f"Slurm/munge programs missing: {', '.join(missing)} ({APT_HINT})"
    if os.geteuid() != 0:
        return (f"slurmd must run as root to start jobs; this test runs as uid {os.geteuid()} "
                "(run the Slurm tests as root, as `make test` in CI does)")
    return None


def missing_rest() -> str | None:
    """Why slurmrestd cannot be tried here (None: it can)."""
    missing = [p for p in REST if shutil.which(p) is None and not os.path.exists(f"/usr/sbin/{p}")]
    if missing:
        return f"missing: {', '.join(missing)} (apt-get install slurmrestd curl)"
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        return "no user 'nobody' to run slurmrestd as (it refuses root)"
    return None


def wait_for(cond: Callable[[], object], timeout_s: float, what: str,
             poll_s: float = 0.2) -> object:
    """Poll ``cond`` until it returns something truthy (returned); TimeoutError naming
    ``what`` after ``timeout_s`` s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:g} s for {what}")
        time.sleep(poll_s)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _program(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """munged + slurmctld + one slurmd per node, on loopback, in a temporary directory."""

    def __init__(self, nodes: tuple[NodeSpec, ...] = DEFAULT_NODES, cluster: str = "rptest"):
        self.nodes = nodes
        self.cluster = cluster
        self.dir = Path(tempfile.mkdtemp(prefix="rp-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: list[tuple[str, subprocess.Popen]] = []

    # --- configuration ---------------------------------------------------------------------
    def _write_config(self) -> None:
        d = self.dir
        for sub in ("munge", "state", "log", "dev", *(f"spool/{n.name}" for n in self.nodes)):
            (d / sub).mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)                      # slurmrestd runs as nobody: it reads slurm.conf
        (d / "munge").chmod(0o711)          # and reaches munged's socket (the key stays 0600)
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        lines = [
            f"ClusterName={self.cluster}", "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={d}/munge/munge.sock", "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool/%n",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd-%n.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log", f"SlurmdLogFile={d}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "MailProg=/bin/true",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "SchedulerParameters=bf_interval=1,sched_interval=1",
            "ReturnToService=2", "SlurmdParameters=config_overrides", "GresTypes=gpu",
        ]
        gres = []
        for node, port in zip(self.nodes, node_ports):
            extra = f" Gres=gpu:{node.gpus}" if node.gpus else ""
            lines.append(f"NodeName={node.name} NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={node.cpus} RealMemory=1000{extra} "
                         f"Feature={'gpu' if node.gpus else 'cpu'}")
            if node.gpus:
                files = [d / "dev" / f"{node.name}-gpu{i}" for i in range(node.gpus)]
                for f in files:
                    f.touch()
                gres.append(f"NodeName={node.name} Name=gpu File={','.join(map(str, files))}")
        lines.append("PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        (d / "gres.conf").write_text("\n".join(gres) + "\n")

    # --- processes ---------------------------------------------------------------------------
    def _spawn(self, label: str, argv: list[str]) -> subprocess.Popen:
        with open(self.dir / "log" / f"{label}.out", "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.dir, start_new_session=True)
        self._procs.append((label, proc))
        return proc

    def _check_alive(self) -> None:
        for label, proc in self._procs:
            if proc.poll() is not None:
                log = (self.dir / "log" / f"{label}.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{label} exited with status {proc.returncode}:\n{log}")

    def start(self, timeout_s: float = 60.0) -> Self:
        """Start every daemon; return once ``sinfo`` shows every node idle."""
        self._write_config()
        d = self.dir
        key = d / "munge" / "munge.key"
        subprocess.run([_program("mungekey"), "--create", f"--keyfile={key}"], check=True,
                       capture_output=True, timeout=30)
        key.chmod(0o600)
        self._spawn("munged", [_program("munged"), "--foreground", "--force",
                               f"--socket={d}/munge/munge.sock", f"--key-file={key}",
                               f"--log-file={d}/log/munged.log",
                               f"--pid-file={d}/munge/munged.pid",
                               f"--seed-file={d}/munge/munged.seed"])
        wait_for(lambda: self._check_alive() or (d / "munge" / "munge.sock").exists(),
                 timeout_s, "munged's socket")
        self._spawn("slurmctld", [_program("slurmctld"), "-D", "-f", str(self.conf)])
        wait_for(lambda: self._check_alive() or self._answers(), timeout_s,
                 "slurmctld to answer `scontrol ping`")
        for node in self.nodes:
            self._spawn(f"slurmd-{node.name}",
                        [_program("slurmd"), "-D", "-N", node.name, "-f", str(self.conf)])
        wait_for(lambda: self._check_alive() or self.all_idle(), timeout_s,
                 f"sinfo to show {[n.name for n in self.nodes]} idle")
        return self

    def start_rest(self, timeout_s: float = 60.0) -> Path:
        """slurmrestd on a unix socket (``rest_auth/local``), as user ``nobody`` (it refuses to
        run as root); its socket path once it answers (started once per cluster)."""
        rest = self.dir / "rest"
        if any(label == "slurmrestd" for label, _ in self._procs):
            return rest / "slurmrestd.sock"
        rest.mkdir()
        rest.chmod(0o777)                   # nobody creates its socket here
        sock = rest / "slurmrestd.sock"
        self._spawn("slurmrestd", [_program("slurmrestd"), "-u", "nobody", "-f", str(self.conf),
                                   "-a", "rest_auth/local", "-s", "openapi/v0.0.38",
                                   f"unix:{sock}"])

        def answers() -> bool:
            self._check_alive()
            if not sock.exists():
                return False
            done = subprocess.run(["curl", "-sS", "--fail", "--unix-socket", str(sock),
                                   "http://localhost/slurm/v0.0.38/ping"], capture_output=True,
                                  timeout=30, check=False)
            return done.returncode == 0
        wait_for(answers, timeout_s, "slurmrestd to answer /slurm/v0.0.38/ping")
        return sock

    def _answers(self) -> bool:
        done = subprocess.run(["scontrol", "ping"], env=self.env, capture_output=True,
                              text=True, timeout=30, check=False)
        return done.returncode == 0 and "UP" in done.stdout

    def run(self, *argv: str, timeout_s: float = 30.0) -> str:
        """Run a Slurm client against this cluster; its stdout (CalledProcessError on failure,
        with stderr)."""
        done = subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
        return done.stdout

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%N %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def all_idle(self) -> bool:
        states = self.node_states()
        return all(states.get(n.name) == "idle" for n in self.nodes)

    def sbatch(self, *args: str, command: str = "sleep 300") -> str:
        """Submit a batch job (output discarded); its job id."""
        out = self.run("sbatch", "--parsable", "--output=/dev/null", *args, "--wrap", command)
        return out.strip().split(";")[0]

    def job_ids(self) -> set[str]:
        out = self.run("squeue", "--noheader", "--format=%i")
        return {line.strip() for line in out.splitlines() if line.strip()}

    def cancel_all(self, timeout_s: float = 60.0) -> None:
        """Cancel every job and wait until the queue is empty and the nodes idle."""
        self.run("scancel", f"--user={os.getuid()}")
        wait_for(lambda: not self.job_ids() and self.all_idle(), timeout_s,
                 "the queue to empty after scancel")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel the jobs, terminate the daemons (slurmd, slurmctld, munged) and remove the
        directory (kept, with its logs, when something would not stop)."""
        clean = True
        try:
            if self._procs and all(p.poll() is None for _, p in self._procs):
                self.cancel_all()
        except (subprocess.SubprocessError, TimeoutError, OSError):
            clean = False
        for label, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
                clean = False
        self._procs.clear()
        if clean:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


# --- recording the outputs the offline tests read (test/data/slurm) ---------------------------
HOSTLISTS = ("gpu[01-04]", "gpu[08-10],login1", "rack[1-2]-n[01-02]", "n[098-101]",
             "gpu[01-02,05]", "n[1-2],n1", "a,,b", "a[01-3]", "cpu01")


def record(dest: Path) -> None:
    """Run a small queue on a fresh cluster and write what its commands print into ``dest``:
    ``squeue.json`` (``squeue --json``), ``squeue_start.txt`` (``squeue --start --noheader
    --format=%i|%Y``), ``sinfo.json``, ``hostnames.json`` (``scontrol show hostnames`` of
    :data:`HOSTLISTS`), ``squeue_down.txt`` (what ``squeue --json`` says with slurmctld
    stopped) and ``meta.json`` (when, and the Slurm version)."""
    import json

    dest.mkdir(parents=True, exist_ok=True)
    with SlurmCluster() as c:
        c.sbatch("-J", "llm-train", "-w", "gpu01", "--gres=gpu:4", "-c", "2", "-t", "30")
        c.sbatch("-J", "llm-serve", "-w", "gpu02", "--gres=gpu:2", "-c", "1", "-t", "60")
        c.sbatch("-J", "etl", "-w", "cpu01", "-c", "4", "-t", "10")
        wait_for(lambda: "R" == c.run("squeue", "-h", "-o", "%t", "-w", "cpu01").strip(), 60,
                 "etl to run")
        c.sbatch("-J", "report", "-c", "4", "-t", "5")
        c.sbatch("-J", "llm-train-2", "--gres=gpu:4", "-c", "1", "-t", "120")
        c.sbatch("-J", "nightly", "--begin=now+600", "-c", "1", "-t", "20",
                 "--comment=power_class=io")
        c.sbatch("-J", "forever", "--begin=now+3600", "-t", "UNLIMITED", "-c", "1",
                 "--comment=power_class=quantum")
        c.sbatch("-J", "sweep", "--array=0-3", "--begin=now+900", "-c", "4", "-t", "3")

        def estimated():
            jobs = json.loads(c.run("squeue", "--json"))["jobs"]
            return all(j["start_time"] for j in jobs if j["name"] in ("report", "llm-train-2"))
        wait_for(estimated, 60, "backfill to estimate the pending jobs' starts")
        stamp = time.time()
        (dest / "squeue.json").write_text(c.run("squeue", "--json"))
        (dest / "squeue_start.txt").write_text(
            c.run("squeue", "--start", "--noheader", "--format=%i|%Y"))
        (dest / "sinfo.json").write_text(c.run("sinfo", "--json"))
        names = {e: c.run("scontrol", "show", "hostnames", e).split() for e in HOSTLISTS}
        (dest / "hostnames.json").write_text(json.dumps(names, indent=1) + "\n")
        version = c.run("squeue", "--version").strip()
        c.cancel_all()
        ctld = next(p for label, p in c._procs if label == "slurmctld")
        ctld.terminate()
        ctld.wait(timeout=30)
        down = subprocess.run(["squeue", "--json"], env=c.env, capture_output=True, text=True,
                              timeout=120, check=False)
        (dest / "squeue_down.txt").write_text(
            f"exit status {down.returncode}\n--- stderr\n{down.stderr}--- stdout\n{down.stdout}")
    (dest / "meta.json").write_text(json.dumps(
        {"stamp_unix": stamp, "slurm": version,
         "recorded_by": "cd test && python -m helpers.slurm ../test/data/slurm"}, indent=1) + "\n")


if __name__ == "__main__":
    import sys

    record(Path(sys.argv[1]))
