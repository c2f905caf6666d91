"""Checks of the simulator's configuration: `SimConfigError` and the `cfg_*` readers.

Each reader returns the checked value or raises :class:`SimConfigError` naming the key, the
value and the rule; the rack, workload and component parsers all read through these.
"""
from __future__ import annotations

import math
from collections.abc import Mapping


class SimConfigError(ValueError):
    """Invalid simulator configuration; the message names the key, the value and the rule."""


def cfg_map(value, key: str) -> Mapping:
    """``value`` if it is a mapping, else a :class:`SimConfigError` naming ``key``."""
    if not isinstance(value, Mapping):
        raise SimConfigError(f"{key}: {value!r} is not a mapping")
    return value


def cfg_number(value, key: str, low: float = -math.inf, high: float = math.inf,
               unit: str = "") -> float:
    """``value`` as a finite float within ``[low, high]``; errors name ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SimConfigError(f"{key}: {value!r} is not a finite number {unit}".rstrip())
    if not low <= value <= high:
        raise SimConfigError(f"{key}: {value!r} outside [{low}, {high}] {unit}".rstrip())
    return float(value)


def cfg_float(section: Mapping, name: str, key: str, default: float | None = None,
              low: float = -math.inf, high: float = math.inf, unit: str = "") -> float:
    """``section[name]`` (or ``default``) checked by :func:`cfg_number`; ``key`` names the
    section. A missing value without default is an error."""
    where = f"{key}.{name}" if key else name
    value = section.get(name, default)
    if value is None:
        raise SimConfigError(f"{where}: missing, expected a number{' in ' + unit if unit else ''}")
    return cfg_number(value, where, low, high, unit)


def cfg_numbers(values, key: str, low: float = -math.inf, high: float = math.inf,
                unit: str = "", count: int | None = None) -> list[float]:
    """A list of numbers (exactly ``count`` of them if given), each checked by cfg_number."""
    if not isinstance(values, list) or (count is not None and len(values) != count):
        got = f"{len(values)} values" if isinstance(values, list) else repr(values)
        want = f"a list of {count} numbers" if count is not None else "a list of numbers"
        raise SimConfigError(f"{key}: {got}, expected {want}{' (' + unit + ')' if unit else ''}")
    return [cfg_number(v, f"{key}[{i}]", low, high, unit) for i, v in enumerate(values)]
