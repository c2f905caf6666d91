"""The `recorder` node: the rack's topics into rosbag2 bags (MCAP storage) through rosbags.

Each configured topic is subscribed with `raw=True` once the graph tells its type and a
publisher offers it (looked up every `discovery.interval_s`), with QoS matched to the
publishers: reliable only when every publisher is reliable, transient local only when every
publisher is. The serialized CDR is written as it came, stamped with its receive time (ns),
and the publishers' offered QoS goes into the bag's metadata, as `ros2 bag record` does.

A bag is a complete rosbag2 folder (`<prefix>_<UTC start>/` with `metadata.yaml` and one
`.mcap` or `.db3`), closed when it reaches `rotation.max_bytes` or `rotation.max_duration_s`.
With a quota the oldest closed bags are deleted so that all bags of the prefix stay under
`quota.max_total_bytes`. Every `flush.interval_s` the pending MCAP chunk is written out (the
sqlite3 transaction committed), so a kill -9 loses at most that long; on start-up (and after
a write error) a bag left without `metadata.yaml` is salvaged into a complete bag holding every
message that reached the disk (:func:`recover_bags`). Write errors (disk full, folder gone)
are logged and reported on /diagnostics; the node keeps running and retries once a second.

The bag handling (:class:`BagStore`, :func:`recover_bags`) uses no rclpy; it lives here beside
the node because it is the recorder's alone.
"""
from __future__ import annotations

import fcntl
import importlib
import logging
import shutil
import sqlite3
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from io import BytesIO
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from mcap.exceptions import McapError
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import (
    Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.metadata import parse_qos

from rackpower_nodes.core.forecast.datasets import message_typestore
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.recorder_config import (
    RECORDER_PARAMETERS, RecorderConfig, recorder_config_from_params)
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.common import declare_from_specs, diagnostic_status, publish_diagnostics

_log = logging.getLogger(__name__)

RETRY_AFTER_NS = 1_000_000_000
RECORD_OVERHEAD_BYTES = 40           # sqlite3: row id, topic id, timestamp, page overhead
CRASHED = ".crashed"
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class UnknownType(LookupError):
    """A message type the recorder cannot describe in a bag (no .msg/.idl in the ament index)."""


def ensure_type(store, msgtype: str, tried: set[str]) -> None:
    """Make `msgtype` ('pkg/msg/Name') known to the rosbags typestore `store`, registering
    every .msg of its package from `share/<pkg>/msg` in the ament index when needed."""
    if msgtype in store.fielddefs:
        return
    pkg = msgtype.split("/", 1)[0]
    if pkg not in tried:
        tried.add(pkg)
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        from rosbags.typesys import get_types_from_msg
        try:
            folder = Path(get_package_share_directory(pkg)) / "msg"
        except (PackageNotFoundError, OSError):     # OSError: AMENT_PREFIX_PATH unset
            folder = Path(sys.prefix) / "share" / pkg / "msg"
        types: dict = {}
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(encoding="utf-8"),
                                            f"{pkg}/msg/{path.stem}"))
        store.register(types)
    if msgtype not in store.fielddefs:
        raise UnknownType(f"{msgtype}: no .msg definition in share/{pkg}/msg of the ament "
                          f"index or of {sys.prefix}")


def bag_qos(profile) -> Qos:
    """An rclpy QoSProfile as the rosbags `Qos` recorded in metadata (times in s + ns)."""
    def t(duration) -> QosTime:
        sec, nsec = divmod(int(duration.nanoseconds), 1_000_000_000)
        return QosTime(sec, nsec)

    return Qos(history=QosHistory(int(profile.history)), depth=int(profile.depth),
               reliability=QosReliability(int(profile.reliability)),
               durability=QosDurability(int(profile.durability)),
               deadline=t(profile.deadline), lifespan=t(profile.lifespan),
               liveliness=QosLiveliness(int(profile.liveliness)),
               liveliness_lease_duration=t(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions))


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


def _ours(path: Path, prefix: str) -> bool:
    return path.is_dir() and path.name.startswith(prefix + "_")


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- crash recovery ---------------------------------------------------------------------------

def recover_bags(folder: Path, prefix: str, typestore) -> list[tuple[str, int]]:
    """Rewrite every bag of `prefix` in `folder` that has no metadata.yaml (a crash) into a
    complete bag of the same name with every message that reached the disk; returns
    (bag name, messages) per salvaged bag. The broken bag is first renamed to
    `<name>.crashed` and removed only once the new bag is closed, so a crash during the repair
    is repaired on the next start."""
    out = []
    for path in sorted(folder.iterdir()):
        if not _ours(path, prefix):
            continue
        if path.name.endswith(CRASHED):
            crashed, target = path, path.with_name(path.name.removesuffix(CRASHED))
            shutil.rmtree(target, ignore_errors=True)      # an interrupted repair
        elif not (path / "metadata.yaml").exists() and any(path.glob("*.*")):
            crashed, target = path.with_name(path.name + CRASHED), path
            path.rename(crashed)
        else:
            continue
        try:
            out.append((target.name, _salvage(crashed, target, typestore)))
        except (McapError, struct.error, UnicodeDecodeError, KeyError, ValueError, WriterError,
                sqlite3.Error, OSError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            _log.error("cannot salvage %s: %s: %s (left as it is)", crashed,
                       type(exc).__name__, exc)
    return out


def _salvage(crashed: Path, target: Path, typestore) -> int:
    files = sorted(crashed.glob("*.mcap")) + sorted(crashed.glob("*.db3"))
    if not files:
        shutil.rmtree(crashed)
        return 0
    source = files[0]
    is_mcap = source.suffix == ".mcap"
    events = _mcap_events(source) if is_mcap else _sqlite_events(source)
    writer = Writer(target, version=9,
                    storage_plugin=StoragePlugin.MCAP if is_mcap else StoragePlugin.SQLITE3)
    writer.set_custom_data("rackpower.recorder", "1")
    writer.set_custom_data("rackpower.recovered_from", "crash")
    writer.open()
    conns, count = {}, 0
    for kind, key, a, b in events:
        if kind == "connection":
            topic, (msgtype, qos) = a, b
            try:
                ensure_type(typestore, msgtype, set())
            except UnknownType as exc:
                _log.warning("%s: skipping topic %s: %s", crashed, topic, exc)
                continue
            conns[key] = writer.add_connection(topic, msgtype, typestore=typestore,
                                               offered_qos_profiles=qos)
        elif key in conns:
            writer.write(conns[key], a, b)
            count += 1
    if count:
        writer.close()
    else:                                   # nothing reached the disk: nothing to keep
        writer.abort()
        shutil.rmtree(target)
    shutil.rmtree(crashed)
    _log.info("salvaged %d messages of the unclosed bag %s", count, target)
    return count


def _complete_prefix(data: bytes) -> int:
    """Offset after the last complete MCAP record (opcode u8, length u64, body)."""
    pos = 8
    while pos + 9 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        if pos + 9 + length > len(data):
            break
        pos += 9 + length
    return pos


def _mcap_events(path: Path) -> Iterator[tuple]:
    """("connection", channel id, topic, (type, qos)) and ("message", channel id, log time ns,
    data) from every complete record of a possibly truncated MCAP file."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    data = path.read_bytes()
    body = BytesIO(data[8:_complete_prefix(data)])
    schemas: dict[int, str] = {}
    reader = StreamReader(body, skip_magic=True)
    try:
        for rec in reader.records:
            if isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, Channel):
                qos = parse_qos(rec.metadata.get("offered_qos_profiles", "") or [])
                yield "connection", rec.id, rec.topic, (schemas[rec.schema_id], qos)
            elif isinstance(rec, Message):
                yield "message", rec.channel_id, rec.log_time, rec.data
    except McapError:
        return                  # past the last complete, readable record (no footer)


def _sqlite_events(path: Path) -> Iterator[tuple]:
    """The committed topics and messages of a rosbag2 sqlite3 file, as :func:`_mcap_events`."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for tid, name, msgtype, qos in db.execute(
                "SELECT id, name, type, offered_qos_profiles FROM topics ORDER BY id"):
            yield "connection", tid, name, (msgtype, parse_qos(qos or []))
        for tid, t_ns, data in db.execute(
                "SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
            yield "message", tid, t_ns, data
    finally:
        db.close()


# -- the node ---------------------------------------------------------------------------------

def message_class(msgtype: str):
    """The Python class of 'pkg/msg/Name'; UnknownType when its package is not importable."""
    pkg, sub, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        raise UnknownType(f"{msgtype}: cannot import {pkg}.{sub}.{name} ({exc})") from exc


def subscription_qos(offered: list, depth: int) -> QoSProfile:
    """Reliable only when every publisher is, transient local only when every publisher is
    (so a latched topic's last message is recorded), keep last `depth`."""
    reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
    latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class RecorderNode(Node):
    """Records the configured topics into rotating rosbag2 bags."""

    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        self.config = recorder_config_from_params(
            declare_from_specs(self, RECORDER_PARAMETERS))
        cfg = self.config
        self._typestore, self._tried = message_typestore(), set()
        self.bags = BagStore(cfg, self._typestore)
        try:
            self.bags.start()
        except OSError as exc:
            self.bags.stats.last_error = f"{cfg.folder}: {exc}"
        for line in self.bags.recovered:
            self.get_logger().warning(f"salvaged the unclosed bag {line}")
        self._waiting = {self.resolve_topic_name(t): t for t in cfg.topics}
        self._unknown: dict[str, str] = {}
        self._logged_error = ""
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(cfg.discovery_interval_s, self._discover)
        self.create_timer(cfg.flush_interval_s, self.bags.tick)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"recording {sorted(self._waiting)} into {cfg.folder} ({cfg.storage})")
        self._discover()

    def _discover(self) -> None:
        if not self._waiting:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in sorted(self._waiting):
            types = graph.get(topic)
            offered = [i.qos_profile for i in self.get_publishers_info_by_topic(topic)]
            if not types or not offered:
                continue
            try:
                cls = message_class(types[0])
                ensure_type(self._typestore, types[0], self._tried)
            except UnknownType as exc:
                if self._unknown.get(topic) != str(exc):
                    self.get_logger().error(f"cannot record {topic}: {exc}")
                self._unknown[topic] = str(exc)
                continue
            if len(types) > 1:
                self.get_logger().warning(f"{topic} has types {types}; recording {types[0]}")
            self.bags.add_topic(topic, types[0], [bag_qos(q) for q in offered])
            qos = subscription_qos(offered, self.config.qos_depth)
            self.create_subscription(cls, topic, partial(self._on_message, topic), qos,
                                     raw=True)
            del self._waiting[topic]
            self._unknown.pop(topic, None)
            self.get_logger().info(f"recording {topic} ({types[0]}, "
                                   f"{qos.reliability.name.lower()}, "
                                   f"{qos.durability.name.lower()})")

    def _on_message(self, topic: str, data: bytes) -> None:
        self.bags.write(topic, time.time_ns(), data)

    def _publish_diagnostics(self) -> None:
        s, bags = self.bags.stats, self.bags
        if s.last_error != self._logged_error:
            self._logged_error = s.last_error
            self.get_logger().error(f"cannot write bags: {s.last_error}")
        if bags.writer is None and s.last_error:
            level, text = DiagnosticStatus.ERROR, f"not writing: {s.last_error}"
        elif self._waiting:
            level, text = DiagnosticStatus.WARN, f"waiting for {sorted(self._waiting)}"
        else:
            level, text = DiagnosticStatus.OK, f"recording into {bags.current or '-'}"
        values = {"messages_written": s.messages, "bytes_written": s.bytes,
                  "current_bag": bags.current, "bag_bytes": bags.bag_bytes,
                  "bags_closed": s.bags_closed, "bags_deleted": s.bags_deleted,
                  "last_deleted": s.last_deleted, "bags_recovered": s.bags_recovered,
                  "dropped": s.dropped, "last_error": s.last_error,
                  "topics_waiting": " ".join(sorted(self._waiting)),
                  **{f"messages {t}": n for t, n in sorted(s.per_topic.items())}}
        publish_diagnostics(self, self._diag_pub, [diagnostic_status(
            level, f"{self.get_fully_qualified_name()}: recorder", text, "recorder",
            values)])

    def destroy_node(self) -> None:
        """Close the open bag (summary and metadata.yaml written) before the node goes; a bag
        that cannot be closed is salvaged at the next start."""
        name = self.bags.current
        self.bags.close()
        if name and self.bags.closed and self.bags.closed[-1][0].name == name:
            self.get_logger().info(f"closed the bag {name}")
        elif name:
            self.get_logger().error(f"could not close the bag {name}: "
                                    f"{self.bags.stats.last_error}; the next start salvages it")
        super().destroy_node()


def main(args=None) -> int:
    return run_node(RecorderNode, "recorder", args)


if __name__ == "__main__":
    sys.exit(main())
