"""Points of a PDU register map: where each value lives, and the validation of their specs.

`Point` (one per-outlet or device-wide value) and `IdentityCheck` (a register read on connect)
with the helpers that validate their YAML specs; every error names the key, the value and what
was expected. Pure data and numpy; no pymodbus import.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rackpower_nodes.core.pdu_map.codec import TYPES, decode_words, encode_words

REGISTER_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")
WRITABLE_TABLES = ("holding", "coil")

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
_POINT_KEYS = ("table", "address", "stride", "type", "scale", "word_order", "writable")
_DEVICE_POINT_KEYS = ("table", "address", "type", "scale", "word_order")
_IDENTITY_KEYS = ("table", "address", "type", "scale", "word_order", "expect")


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
