"""The PDU register map: its YAML format, validation as a whole, presets and loading.
Pure data; no pymodbus import.

A map (YAML, see docs/pdu.md and config/pdu/) names the outlet count and, per point, the Modbus
table, the 0-based wire address of outlet 1, the stride in registers between outlets, the data
type, the scale (raw x scale = value in the point's unit), the word order of 32-bit values and
whether the controller may write it. An optional `identity` block lists registers read on
connect with the value the device must hold there. Two optional device-wide points (one
register for the whole PDU, no stride) let the controller notice a restart: `boot_count` (a
counter that grows at every power-on) and `uptime_s` (seconds since power-on; a drop means a
restart).

    outlets: 24
    switching_allowed: false
    points:
      outlet_power_w: {table: holding, address: 100, stride: 2, type: float32}
    identity:
      outlet_count: {table: holding, address: 1, type: uint16, expect: outlets}

Every error names the file, the key, the value and what was expected (`ConfigError`).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.pdu_map.points import (
    IdentityCheck, Point, _boolean, _check_overlaps, _identity, _integer, _points, _unknown)

_TOP_KEYS = ("name", "description", "outlets", "switching_allowed", "points", "identity")


def _preset_dir() -> Path:
    """The checkout's config/pdu, else the installed share/rackpower/config/pdu."""
    checkout = Path(__file__).resolve().parents[3] / "config" / "pdu"
    installed = Path(sys.prefix) / "share" / "rackpower" / "config" / "pdu"
    return installed if not checkout.is_dir() and installed.is_dir() else checkout


PRESET_DIR = _preset_dir()


@dataclass(frozen=True)
class RegisterMap:
    """A validated PDU register map (see the module docstring); build with `from_mapping`."""

    name: str
    source: str
    outlets: int
    points: Mapping[str, Point]
    identity: tuple[IdentityCheck, ...] = ()
    switching_allowed: bool = False
    description: str = ""
    raw: Mapping = field(default_factory=dict, repr=False, compare=False)

    def point(self, name: str) -> Point | None:
        """The point called `name`, or None where the map lacks it."""
        return self.points.get(name)

    @property
    def can_write_allocations(self) -> bool:
        p = self.points.get("outlet_allocation_w")
        return p is not None and p.writable

    @property
    def boot_point(self) -> Point | None:
        """The point a restart is detected from: boot_count, else uptime_s, else None."""
        return self.points.get("boot_count") or self.points.get("uptime_s")

    @property
    def can_switch(self) -> bool:
        """Switching is possible *and* allowed by the map's `switching_allowed`."""
        p = self.points.get("outlet_state")
        return self.switching_allowed and p is not None and p.writable

    def with_outlets(self, outlets: int) -> RegisterMap:
        """The same map for a PDU with `outlets` outlets (revalidated)."""
        return RegisterMap.from_mapping({**self.raw, "outlets": outlets}, self.source)

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "<mapping>") -> RegisterMap:
        """Validate `raw` (as read from YAML); `source` names the file in errors."""
        errors: list[str] = []
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: top level = {raw!r}: expected a mapping with "
                              f"'outlets' and 'points'")
        _unknown(raw, _TOP_KEYS, "", errors)
        outlets = _integer(raw, "outlets", "", None, 1, 4096, errors)
        switching = _boolean(raw, "switching_allowed", "", False, errors)
        name = raw.get("name", Path(source).stem)
        if not isinstance(name, str):
            errors.append(f"name = {name!r}: expected a string")
        desc = raw.get("description", "")
        if not isinstance(desc, str):
            errors.append(f"description = {desc!r}: expected a string")
        points = _points(raw.get("points"), outlets or 1, errors)
        identity = _identity(raw.get("identity", {}), outlets, errors)
        if switching and "outlet_state" in points and not points["outlet_state"].writable:
            errors.append("switching_allowed = True: expected points.outlet_state to be a "
                          "coil with writable: true")
        elif switching and "outlet_state" not in points:
            errors.append("switching_allowed = True: expected an outlet_state coil point")
        if not errors:
            _check_overlaps(points, identity, outlets, errors)
        if errors:
            raise ConfigError([f"{source}: {e}" for e in errors])
        return cls(str(name), source, int(outlets), points, identity, bool(switching),
                   str(desc), dict(raw))


def preset_names() -> list[str]:
    """Names of the presets in config/pdu."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_register_map(path_or_preset: str | Path | RegisterMap) -> RegisterMap:
    """A map from a YAML file or a preset name (config/pdu/<name>.yaml); raises ConfigError."""
    if isinstance(path_or_preset, RegisterMap):
        return path_or_preset
    text = str(path_or_preset)
    looks_like_path = isinstance(path_or_preset, Path) or "/" in text \
        or text.endswith((".yaml", ".yml"))
    if looks_like_path:
        path = Path(text)
    else:
        path = PRESET_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(f"register map {text!r}: no such preset in {PRESET_DIR}, "
                              f"expected one of {preset_names()} or a path to a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read register map: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    return RegisterMap.from_mapping(raw, str(path))
