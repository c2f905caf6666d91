"""A PDU's Modbus register map as configuration: where each per-outlet value lives and how
it is encoded. Pure data and numpy codecs; no pymodbus import.

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

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rackpower_nodes.core.params import ConfigError

__all__ = [
    "BIT_TABLES", "DEVICE_POINTS", "IdentityCheck", "POINTS", "Point", "PRESET_DIR",
    "REGISTER_TABLES",
    "READ_LIMITS", "RegisterMap", "TYPES", "WRITE_LIMITS", "load_register_map", "plan_blocks",
    "preset_names",
]

REGISTER_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")
WRITABLE_TABLES = ("holding", "coil")
# numpy big-endian dtype and registers per value
TYPES = {"uint16": (">u2", 1), "int16": (">i2", 1), "uint32": (">u4", 2), "int32": (">i4", 2),
         "float32": (">f4", 2)}
# Modbus application protocol limits per request (registers or bits)
READ_LIMITS = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}
WRITE_LIMITS = {"holding": 123, "coil": 1968}

# point name -> (required, allowed tables, unit)
POINTS = {
    "outlet_power_w": (True, REGISTER_TABLES, "W"),
    "outlet_current_a": (False, REGISTER_TABLES, "A"),
    "outlet_voltage_v": (False, REGISTER_TABLES, "V"),
    "outlet_state": (False, BIT_TABLES, "on/off"),
    "outlet_allocation_w": (False, ("holding",), "W"),
}
# device-wide point name -> (allowed tables, unit): one value per PDU, at `address`
DEVICE_POINTS = {
    "boot_count": (REGISTER_TABLES, "count"),
    "uptime_s": (REGISTER_TABLES, "s"),
}
_TOP_KEYS = ("name", "description", "outlets", "switching_allowed", "points", "identity")
_POINT_KEYS = ("table", "address", "stride", "type", "scale", "word_order", "writable")
_DEVICE_POINT_KEYS = ("table", "address", "type", "scale", "word_order")
_IDENTITY_KEYS = ("table", "address", "type", "scale", "word_order", "expect")


def _preset_dir() -> Path:
    """The checkout's config/pdu, else the installed share/rackpower/config/pdu."""
    checkout = Path(__file__).resolve().parents[2] / "config" / "pdu"
    installed = Path(sys.prefix) / "share" / "rackpower" / "config" / "pdu"
    return installed if not checkout.is_dir() and installed.is_dir() else checkout


PRESET_DIR = _preset_dir()


@dataclass(frozen=True)
class Point:
    """One per-outlet value: outlet k (1-based) starts at `address + (k - 1) * stride`.

    Bit tables (coil, discrete) hold one bit per outlet and have type "bool".
    """

    name: str
    table: str
    address: int
    stride: int
    type: str
    scale: float = 1.0
    word_order: str = "big"
    writable: bool = False
    per_outlet: bool = True        # False: one device-wide value at `address` (DEVICE_POINTS)

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES

    @property
    def width(self) -> int:
        """Registers (or bits) per value."""
        return 1 if self.is_bits else TYPES[self.type][1]

    def address_of(self, outlets: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Wire address(es) of the first register of 1-based outlet number(s)."""
        return self.address + (np.asarray(outlets, dtype=np.int64) - 1) * self.stride

    def decode(self, words: np.ndarray) -> np.ndarray:
        """(n, width) uint16 registers -> (n,) float64 values in the point's unit."""
        words = np.asarray(words, dtype=np.uint16).reshape(-1, self.width)
        return decode_words(words, self.type, self.word_order) * self.scale

    def encode(self, values: np.ndarray | Sequence[float]) -> np.ndarray:
        """(n,) values in the point's unit -> (n, width) uint16 registers.

        Raises ValueError naming the point and the value when it does not fit the type."""
        raw = np.asarray(values, dtype=np.float64) / self.scale
        try:
            return encode_words(raw, self.type, self.word_order)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None


@dataclass(frozen=True)
class IdentityCheck:
    """A register read on connect; the device must hold `expect` (after scaling) there."""

    name: str
    table: str
    address: int
    type: str
    expect: float
    scale: float = 1.0
    word_order: str = "big"

    def as_point(self) -> Point:
        return Point(f"identity.{self.name}", self.table, self.address, TYPES[self.type][1],
                     self.type, self.scale, self.word_order)

    def matches(self, value: float) -> bool:
        """Exact for integer types; float32 within its rounding."""
        if self.type == "float32":
            return math.isclose(value, self.expect, rel_tol=1e-6, abs_tol=1e-6)
        return value == self.expect


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


def plan_blocks(spans: Iterable[tuple[int, int]], limit: int,
                readable: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Merge (address, count) spans into as few requests of at most `limit` as possible.

    Spans that touch or overlap merge; spans separated by a gap merge too when the gap lies
    inside one of the `readable` (address, count) ranges (registers known to exist, e.g. the
    other outlets of a densely packed point). Returns sorted (address, count) requests.
    """
    ranges = sorted((a, a + n) for a, n in readable)
    out: list[list[int]] = []
    for start, count in sorted(spans):
        end = start + count
        if out:
            s0, e0 = out[-1]
            gap_ok = start <= e0 or any(a <= e0 and start <= b for a, b in ranges)
            if gap_ok and max(end, e0) - s0 <= limit:
                out[-1][1] = max(end, e0)
                continue
        while end - start > limit:      # one span longer than a request
            out.append([start, start + limit])
            start += limit
        out.append([start, end])
    return [(s, e - s) for s, e in out]


def decode_words(words: np.ndarray, type_: str, word_order: str = "big") -> np.ndarray:
    """(n, width) uint16 registers -> (n,) float64 raw values of `type_`."""
    dtype, width = TYPES[type_]
    words = np.asarray(words, dtype=np.uint16).reshape(-1, width)
    if word_order == "little" and width > 1:
        words = words[:, ::-1]
    return np.frombuffer(np.ascontiguousarray(words, dtype=">u2").tobytes(),
                         dtype=dtype).astype(np.float64)


def encode_words(raw: np.ndarray, type_: str, word_order: str = "big") -> np.ndarray:
    """(n,) raw values -> (n, width) uint16 registers; ValueError when a value does not fit."""
    dtype, width = TYPES[type_]
    raw = np.atleast_1d(np.asarray(raw, dtype=np.float64))
    if not np.all(np.isfinite(raw)):
        raise ValueError(f"values {raw.tolist()}: expected finite numbers")
    if type_ == "float32":
        lo, hi = -float(np.finfo(np.float32).max), float(np.finfo(np.float32).max)
        cast = raw
    else:
        info = np.iinfo(np.dtype(dtype))
        lo, hi = info.min, info.max
        cast = np.rint(raw)
    bad = raw[(cast < lo) | (cast > hi)]
    if bad.size:
        raise ValueError(f"raw value {float(bad[0])!r} outside {type_} range {lo}..{hi}")
    words = np.frombuffer(cast.astype(dtype).tobytes(), dtype=">u2").reshape(-1, width)
    if word_order == "little" and width > 1:
        words = words[:, ::-1]
    return words.astype(np.uint16)


# -- validation helpers ---------------------------------------------------------------------
def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _unknown(raw: Mapping, allowed: Sequence[str], where: str, errors: list[str]) -> None:
    for k in raw:
        if k not in allowed:
            errors.append(f"{_key(where, str(k))}: unknown key, expected one of "
                          f"{', '.join(allowed)}")


def _integer(raw: Mapping, name: str, where: str, default: int | None, low: int, high: int,
             errors: list[str]) -> int | None:
    value = raw.get(name, default)
    key = _key(where, name)
    if value is None:
        errors.append(f"{key}: missing, expected an integer {low}..{high}")
    elif isinstance(value, bool) or not isinstance(value, int):
        errors.append(f"{key} = {value!r}: expected an integer {low}..{high}")
    elif not low <= value <= high:
        errors.append(f"{key} = {value!r}: expected {low}..{high}")
    else:
        return value
    return None


def _boolean(raw: Mapping, name: str, where: str, default: bool, errors: list[str]) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        errors.append(f"{_key(where, name)} = {value!r}: expected true or false")
        return default
    return value


def _choice(raw: Mapping, name: str, where: str, default: str | None,
            choices: Sequence[str], errors: list[str]) -> str | None:
    value = raw.get(name, default)
    if value not in choices:
        what = "missing" if value is None else f"= {value!r}"
        errors.append(f"{_key(where, name)} {what}: expected one of {', '.join(choices)}")
        return None
    return value


def _scale(raw: Mapping, where: str, errors: list[str]) -> float:
    value = raw.get("scale", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value == 0:
        errors.append(f"{where}.scale = {value!r}: expected a finite non-zero number "
                      f"(raw x scale = value)")
        return 1.0
    return float(value)


def _encoding(raw: Mapping, table: str | None, where: str, errors: list[str]):
    """type, word order and scale of a value in `table`."""
    if table in BIT_TABLES:
        _choice(raw, "type", where, "bool", ("bool",), errors)
        return "bool", "big", 1.0
    type_ = _choice(raw, "type", where, None, tuple(TYPES), errors)
    order = _choice(raw, "word_order", where, "big", ("big", "little"), errors)
    return type_, order, _scale(raw, where, errors)


def _points(raw: Any, outlets: int, errors: list[str]) -> dict[str, Point]:
    if not isinstance(raw, Mapping):
        errors.append(f"points = {raw!r}: expected a mapping of point names "
                      f"({', '.join(POINTS)}) to register specs")
        return {}
    _unknown(raw, (*POINTS, *DEVICE_POINTS), "points", errors)
    out: dict[str, Point] = {}
    specs = [(name, required, tables, unit, True)
             for name, (required, tables, unit) in POINTS.items()]
    specs += [(name, False, tables, unit, False)
              for name, (tables, unit) in DEVICE_POINTS.items()]
    for name, required, tables, unit, per_outlet in specs:
        where = f"points.{name}"
        spec = raw.get(name)
        if spec is None:
            if required:
                errors.append(f"{where}: missing, expected a register spec ({unit})")
            continue
        if not isinstance(spec, Mapping):
            errors.append(f"{where} = {spec!r}: expected a mapping with keys "
                          f"{', '.join(_POINT_KEYS)}")
            continue
        n_err = len(errors)
        _unknown(spec, _POINT_KEYS if per_outlet else _DEVICE_POINT_KEYS, where, errors)
        table = _choice(spec, "table", where, None, tables, errors)
        address = _integer(spec, "address", where, None, 0, 65535, errors)
        type_, order, scale = _encoding(spec, table, where, errors)
        width = 1 if table in BIT_TABLES else TYPES.get(type_, (None, 1))[1]
        stride = _integer(spec, "stride", where, width, width, 65535, errors)
        writable = _boolean(spec, "writable", where, False, errors)
        if writable and table not in WRITABLE_TABLES:
            errors.append(f"{where}.writable = True: the {table} table is read-only, expected "
                          f"false (or table: {' / '.join(WRITABLE_TABLES)})")
        if name == "outlet_allocation_w" and not writable:
            errors.append(f"{where}.writable = {writable!r}: expected true (the controller "
                          f"writes allocations there; omit the point on a PDU without one)")
        if len(errors) > n_err:
            continue
        last = address + ((outlets - 1) * stride if per_outlet else 0) + width - 1
        if last > 65535:
            errors.append(f"{where}: outlet {outlets} ends at address {last}, expected <= "
                          f"65535 (address {address}, stride {stride})")
            continue
        out[name] = Point(name, table, address, stride, type_, scale, order, writable,
                          per_outlet)
    return out


def _identity(raw: Any, outlets: int | None, errors: list[str]) -> tuple[IdentityCheck, ...]:
    if not isinstance(raw, Mapping):
        errors.append(f"identity = {raw!r}: expected a mapping of check names to "
                      f"{{table, address, type, expect}}")
        return ()
    out = []
    for name, spec in raw.items():
        where = f"identity.{name}"
        if not isinstance(spec, Mapping):
            errors.append(f"{where} = {spec!r}: expected a mapping with keys "
                          f"{', '.join(_IDENTITY_KEYS)}")
            continue
        n_err = len(errors)
        _unknown(spec, _IDENTITY_KEYS, where, errors)
        table = _choice(spec, "table", where, None, REGISTER_TABLES, errors)
        address = _integer(spec, "address", where, None, 0, 65535, errors)
        type_, order, scale = _encoding(spec, table, where, errors)
        expect = spec.get("expect")
        if expect == "outlets":
            expect = outlets
        elif isinstance(expect, bool) or not isinstance(expect, (int, float)) \
                or not math.isfinite(expect):
            errors.append(f"{where}.expect = {expect!r}: expected a number or 'outlets'")
        if len(errors) == n_err and expect is not None:
            out.append(IdentityCheck(str(name), table, address, type_, float(expect), scale,
                                     order))
    return tuple(out)


def _check_overlaps(points: Mapping[str, Point], identity: Sequence[IdentityCheck],
                    outlets: int, errors: list[str]) -> None:
    """No two points (or identity registers) may share a register of the same table."""
    owner: dict[tuple[str, int], str] = {}
    items = [(p, outlets if p.per_outlet else 1) for p in points.values()]
    items += [(c.as_point(), 1) for c in identity]
    for p, n in items:
        key = p.name if p.name.startswith("identity.") else f"points.{p.name}"
        for first in p.address_of(np.arange(1, n + 1)).tolist():
            for a in range(first, first + p.width):
                other = owner.setdefault((p.table, a), p.name)
                if other != p.name:
                    errors.append(f"{key}: {p.table} register {a} is also used by "
                                  f"{other}, expected disjoint registers (check address "
                                  f"and stride)")
                    return
