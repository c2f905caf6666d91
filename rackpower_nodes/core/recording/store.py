"""Rotating rosbag2 bags under a disk quota: :class:`BagStore`, the recorder's writer.

A bag is a complete rosbag2 folder (`<prefix>_<UTC start>/` with `metadata.yaml` and one
`.mcap` or `.db3`), closed when it reaches the configured size or duration; with a quota the
oldest closed bags are deleted so that all bags of the prefix stay under it. A write error
(disk full, folder gone) aborts the open bag, is kept in :class:`StoreStats` and writing
resumes a second later, after the aborted bag is salvaged (:mod:`.salvage`). No rclpy: the
recorder node hands it serialized messages and their receive times.
"""
from __future__ import annotations

import fcntl
import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.recorder_config import RecorderConfig
from rackpower_nodes.core.recording.salvage import CRASHED, _ours, recover_bags

__all__ = ["RECORD_OVERHEAD_BYTES", "RETRY_AFTER_NS", "BagStore", "StoreStats"]

_log = logging.getLogger(__name__)

RETRY_AFTER_NS = 1_000_000_000
RECORD_OVERHEAD_BYTES = 40           # sqlite3: row id, topic id, timestamp, page overhead
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass
class StoreStats:
    """What /diagnostics reports; sizes in bytes."""

    messages: int = 0
    bytes: int = 0
    bags_closed: int = 0
    bags_deleted: int = 0
    bags_recovered: int = 0
    dropped: int = 0
    last_error: str = ""
    last_deleted: str = ""
    per_topic: dict[str, int] = field(default_factory=dict)


class BagStore:
    """Writes messages into rotating rosbag2 bags in `cfg.folder` under a disk quota.

    Not thread-safe: call from one thread (the node's single-threaded executor). `now_ns` is
    the wall clock in ns (Unix epoch), used for bag names and durations.
    """

    def __init__(self, cfg: RecorderConfig, typestore, now_ns=time.time_ns):
        self.cfg, self.store, self.now_ns = cfg, typestore, now_ns
        self.topics: dict[str, tuple[str, list[Qos]]] = {}
        self.stats = StoreStats()
        self.writer: Writer | None = None
        self.conns: dict = {}
        self.bag_start_ns = self.bag_bytes = 0
        self.closed: list[tuple[Path, int]] = []     # oldest first
        self.retry_at_ns = 0
        self.recovered: list[str] = []
        self._lock = None                             # held while the node runs
        self._salvage_pending = False

    @property
    def current(self) -> str:
        return self.writer.path.name if self.writer else ""

    def start(self) -> None:
        """Take the folder's lock for the prefix, salvage unclosed bags, list the closed ones,
        apply the quota. ConfigError when another recorder holds the lock (it would take the
        other's open bag for a crashed one)."""
        self.cfg.folder.mkdir(parents=True, exist_ok=True)
        lock = self.cfg.folder / f".{self.cfg.prefix}.lock"
        self._lock = lock.open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            raise ConfigError(
                f"output.folder = {str(self.cfg.folder)!r}, output.prefix = "
                f"{self.cfg.prefix!r}: another recorder writes there ({lock} is locked); "
                "expected one recorder per folder and prefix") from exc
        self._recover()
        self.closed = [(p, _du(p)) for p in sorted(self.cfg.folder.iterdir())
                       if _ours(p, self.cfg.prefix) and (p / "metadata.yaml").is_file()]
        self._enforce_quota()

    def add_topic(self, topic: str, msgtype: str, offered: list[Qos]) -> None:
        self.topics[topic] = (msgtype, offered)
        if self.writer is not None:
            self._guard(lambda: self._connect(topic))

    def write(self, topic: str, t_ns: int, data) -> None:
        """Append one serialized message received at `t_ns` (Unix ns)."""
        def op():
            if self.writer is None:
                if t_ns < self.retry_at_ns:
                    raise _Dropped
                self._open(t_ns)
            elif self._rotation_due(t_ns):
                self._rotate(t_ns)
            self.writer.write(self.conns[topic], t_ns, data)
            storage = self.writer.storage
            if hasattr(storage, "chunk"):        # MCAP: file + pending chunk, exactly
                self.bag_bytes = storage.bio.tell() + storage.chunk.bio.tell()
            else:
                self.bag_bytes += len(data) + RECORD_OVERHEAD_BYTES
            self.stats.messages += 1
            self.stats.bytes += len(data)
            self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1

        if not self._guard(op):
            self.stats.dropped += 1

    def tick(self) -> None:
        """Flush pending messages to disk; rotate a bag that is past its duration."""
        if self.writer is None:
            return
        now = self.now_ns()
        self._guard(lambda: self._rotate(now) if self._rotation_due(now) else self._flush())

    def close(self) -> None:
        if self.writer is not None:
            self._guard(self._close)

    # -- internals --------------------------------------------------------------------------

    def _guard(self, op) -> bool:
        """Run `op`; a write error aborts the bag (salvaged on the retry) and is reported."""
        try:
            op()
            return True
        except _Dropped:
            return False
        except (OSError, WriterError, sqlite3.Error) as exc:
            where = self.writer.path if self.writer else self.cfg.folder
            self.stats.last_error = f"{where}: {type(exc).__name__}: {exc}"
            _log.debug("cannot write bag: %s (retrying in 1 s)", self.stats.last_error)
            self._abort()
            self.retry_at_ns = self.now_ns() + RETRY_AFTER_NS
            self._salvage_pending = True
            return False

    def _open(self, t_ns: int) -> None:
        self.cfg.folder.mkdir(parents=True, exist_ok=True)
        if self._salvage_pending:
            self._recover()                         # the bag aborted by the error
            self._salvage_pending = False
        stamp = datetime.fromtimestamp(t_ns / 1e9, UTC)
        name = f"{self.cfg.prefix}_{stamp:%Y%m%dT%H%M%S}_{stamp.microsecond // 1000:03d}"
        path, n = self.cfg.folder / name, 0
        while path.exists() or path.with_name(path.name + CRASHED).exists():
            n += 1
            path = self.cfg.folder / f"{name}-{n}"
        writer = Writer(path, version=9, storage_plugin=_PLUGINS[self.cfg.storage])
        writer.set_custom_data("rackpower.recorder", "1")
        writer.open()
        self.writer, self.conns = writer, {}
        self.bag_start_ns, self.bag_bytes = t_ns, 0
        for topic in self.topics:
            self._connect(topic)

    def _connect(self, topic: str) -> None:
        msgtype, offered = self.topics[topic]
        self.conns[topic] = self.writer.add_connection(
            topic, msgtype, typestore=self.store, offered_qos_profiles=offered)

    def _rotation_due(self, t_ns: int) -> bool:
        cfg = self.cfg
        return bool((cfg.max_bag_bytes and self.bag_bytes >= cfg.max_bag_bytes)
                    or (cfg.max_bag_duration_s
                        and t_ns - self.bag_start_ns >= cfg.max_bag_duration_s * 1e9))

    def _rotate(self, t_ns: int) -> None:
        self._close()
        self._open(t_ns)

    def _flush(self) -> None:
        """Write the pending chunk and the file buffer out (relies on rosbags 0.11's storage
        classes: McapWriter.close_chunk/bio, Sqlite3Writer.conn)."""
        storage = self.writer.storage
        if hasattr(storage, "close_chunk"):
            if storage.chunk.msgs:
                storage.close_chunk()
            storage.bio.flush()
        else:
            storage.conn.commit()

    def _close(self) -> None:
        self.writer.close()                   # on an error _guard aborts it, still current
        writer, self.writer, self.bag_bytes = self.writer, None, 0
        self.closed.append((writer.path, _du(writer.path)))
        self.stats.bags_closed += 1
        self._enforce_quota()

    def _abort(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.abort()
            except (OSError, sqlite3.Error) as exc:
                _log.warning("closing %s after the error failed too: %s", writer.path, exc)

    def _enforce_quota(self) -> None:
        quota = self.cfg.quota_bytes
        if not quota:
            return
        total = sum(size for _, size in self.closed) + self.bag_bytes
        while total > quota and self.closed:
            path, size = self.closed.pop(0)
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            self.stats.bags_deleted += 1
            self.stats.last_deleted = path.name
            _log.info("quota %d bytes: deleted the oldest bag %s (%d bytes)", quota, path, size)

    def _recover(self) -> None:
        for name, count in recover_bags(self.cfg.folder, self.cfg.prefix, self.store):
            self.stats.bags_recovered += 1
            self.recovered.append(f"{name} ({count} messages)")


class _Dropped(Exception):
    """A message arrived while writing is paused after an error."""


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
