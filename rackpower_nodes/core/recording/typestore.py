"""Message types for bags: 'pkg/msg/Name' made known to a rosbags typestore.

A bag's connection needs its message definition. :func:`ensure_type` registers every .msg of
the type's package from `share/<pkg>/msg` in the ament index (or the venv prefix) the first time
the package is asked for, and raises :class:`UnknownType` when there is none. No rclpy.
"""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["UnknownType", "ensure_type"]


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
