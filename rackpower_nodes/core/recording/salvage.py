"""Crash recovery of rosbag2 bags: a bag left without `metadata.yaml` (the recorder killed, or
a write error) rewritten into a complete bag holding every message that reached the disk.

MCAP files are read record by record up to the last complete one (a truncated file has no
footer); sqlite3 files give their committed rows. The broken bag is renamed `<name>.crashed`
first and removed only once the new bag is closed, so a crash during the repair is repaired
on the next start. No rclpy: rosbags and mcap only.
"""
from __future__ import annotations

import logging
import shutil
import sqlite3
import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

from mcap.exceptions import McapError
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.metadata import parse_qos

from rackpower_nodes.core.recording.typestore import UnknownType, ensure_type

__all__ = ["CRASHED", "recover_bags"]

_log = logging.getLogger(__name__)

CRASHED = ".crashed"


def _ours(path: Path, prefix: str) -> bool:
    return path.is_dir() and path.name.startswith(prefix + "_")


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
