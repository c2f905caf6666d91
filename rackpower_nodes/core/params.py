"""Parameter schemas shared by every node: specs, typed reading, ROS parameter YAML files.

Plain data, no rclpy. A node declares one ROS parameter per `ParamSpec` (see
`rackpower_nodes.nodes.common`) and hands the values to its config builder, which calls
`read_parameters` for type and range checks and then checks what is specific to it. Every error
names the key, the offending value and what was expected.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Invalid configuration; `errors` holds the individual messages."""

    def __init__(self, errors: str | Sequence[str]):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: dotted name, default, ROS type name, description, inclusive range.

    `type` is one of string, integer, double, bool and their `_array` forms. `positive` asks
    for a value > 0 (a ROS range cannot say "exclusive"); `choices` lists the allowed values.
    `required` marks a safety-critical value with no default (`default` is None): a config
    without it is an error naming the key.
    """

    name: str
    default: Any
    type: str
    description: str
    read_only: bool = True
    range: tuple[float, float] | None = None
    positive: bool = False
    choices: tuple[Any, ...] | None = None
    required: bool = False

    def constraints(self) -> str:
        """What the value must be, in words (the ROS descriptor's additional_constraints)."""
        parts = ["required: no default, the configuration must set it"] if self.required else []
        if self.choices is not None:
            parts.append(f"one of: {', '.join(map(str, self.choices))}")
        if self.range is not None:
            parts.append(f"{self.range[0]:g} .. {self.range[1]:g}")
        if self.positive:
            parts.append("> 0")
        return "; ".join(parts)


def param(name, default, type_, description, range_=None, read_only=True, positive=False,
          choices=None, required=False) -> ParamSpec:
    """Shorthand for a `ParamSpec` in a schema table (`required`: pass None as the default)."""
    return ParamSpec(name, default, type_, description, read_only, range_, positive,
                     None if choices is None else tuple(choices), required)


ROS_OWN_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})
"""Parameters rclpy declares on every node itself; a config may set them."""

PLACEHOLDER_RE = re.compile(r"^\s*FILL[_ ]?ME\b", re.IGNORECASE)
"""A value an operator must replace (config/rack.example.yaml): 'FILL_ME: what to put here'."""


def unknown_key_errors(given: Iterable[str], known: Iterable[str], owner: str) -> list[str]:
    """One message per key of `given` not in `known` (nor rclpy's own), naming the closest
    known key where one is close (a typo such as budget.breaker_amps)."""
    known = sorted(set(known) | ROS_OWN_PARAMETERS)
    errors = []
    for key in sorted(set(given) - set(known)):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        errors.append(f"{key}: not a parameter of {owner}{hint}")
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


_ELEMENT = {"string": (lambda v: isinstance(v, str), str, "a string"),
            "integer": (_is_int, int, "an integer"),
            "double": (_is_number, float, "a number"),
            "bool": (lambda v: isinstance(v, bool), bool, "a bool")}


def coerce(spec: ParamSpec, value: Any) -> Any:
    """Check the type of `value` against `spec` and normalise it (arrays become tuples)."""
    base, is_array = spec.type.removesuffix("_array"), spec.type.endswith("_array")
    check, convert, what = _ELEMENT[base]
    _reject_placeholders(spec, value)
    if not is_array:
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()  # numpy scalar
        if not check(value):
            raise ConfigError(f"{spec.name} = {value!r}: expected {what} ({spec.type})")
        return convert(value)
    if hasattr(value, "tolist"):
        value = value.tolist()  # numpy or array.array
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{spec.name} = {value!r}: expected a list ({spec.type})")
    bad = [f"{spec.name}[{i}] = {v!r}: expected {what} ({spec.type})"
           for i, v in enumerate(value) if not check(v)]
    if bad:
        raise ConfigError(bad)
    return tuple(convert(v) for v in value)


def _reject_placeholders(spec: ParamSpec, value: Any) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    bad = [f"{spec.name}{'' if v is value else f'[{i}]'} = {v!r}: placeholder not filled in; "
           f"expected {spec.description} ({spec.type})"
           for i, v in enumerate(items) if isinstance(v, str) and PLACEHOLDER_RE.match(v)]
    if bad:
        raise ConfigError(bad)


def _check_scalar(spec: ParamSpec, value: Any, errors: list[str]) -> None:
    name = spec.name
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{name} = {value!r}: expected a finite number")
    elif spec.positive and value <= 0:
        errors.append(f"{name} = {value!r}: expected > 0")
    elif spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        errors.append(f"{name} = {value!r}: expected {spec.range[0]}..{spec.range[1]}")
    elif spec.choices is not None and value not in spec.choices:
        errors.append(f"{name} = {value!r}: expected one of {', '.join(map(str, spec.choices))}")


def read_parameters(specs: Iterable[ParamSpec], values: Mapping[str, Any],
                    errors: list[str], owner: str = "this node") -> dict[str, Any]:
    """Type- and range-check every spec (default when absent); failed keys are left out.

    A key of `values` that no spec names is an error (with the close match), and so is a
    required spec without a value.
    """
    specs = tuple(specs)
    errors.extend(unknown_key_errors(values, (s.name for s in specs), owner))
    out: dict[str, Any] = {}
    for spec in specs:
        raw = values.get(spec.name, spec.default)
        if raw is None and spec.required:
            errors.append(f"{spec.name}: missing; expected {spec.description} "
                          f"({spec.type}, safety-critical: no default)")
            continue
        try:
            out[spec.name] = coerce(spec, raw)
        except ConfigError as exc:
            errors.extend(exc.errors)
            continue
        if not spec.type.endswith("_array") and spec.type != "bool":
            _check_scalar(spec, out[spec.name], errors)
    return out


_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_ids(key: str, ids: Sequence[str], errors: list[str]) -> None:
    """Component or host ids: unique, and safe in topic, plot and file names."""
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if not _ID_RE.match(ident):
            errors.append(f"{key}[{i}] = {ident!r}: expected [A-Za-z0-9_.-]+")
        elif ident in seen:
            errors.append(f"{key}[{i}] = {ident!r}: duplicate, expected unique ids")
        seen.add(ident)


def flatten_parameters(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (`{"serial": {"port": x}}` → serial.port)."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{prefix or 'parameters'} = {tree!r}: expected a mapping")
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_parameters(value, name))
        else:
            flat[name] = value
    return flat


def _node_sections(doc: Mapping, node_name: str) -> list[Mapping]:
    """Sections that apply to `node_name`: `/**` first, then the node's own (overrides)."""
    bare = node_name.strip("/").rsplit("/", 1)[-1]
    wanted = {node_name.strip("/")} | {bare}
    own = [doc[k] for k in doc if isinstance(k, str)
           and (k.strip("/") in wanted or k.endswith("/" + bare))]
    return ([doc["/**"]] if "/**" in doc else []) + own


def read_yaml(path: str | Path) -> Any:
    """The document of a YAML file; ConfigError naming the file when it cannot be read or
    parsed."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


def load_node_parameters(path: str | Path, node_name: str) -> dict[str, Any]:
    """Read a ROS parameter YAML file; return {dotted name: value} for `node_name`."""
    path = Path(path)
    doc = read_yaml(path)
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: top level is {type(doc).__name__}, expected a mapping of "
                          f"node names to {{ros__parameters: ...}}")
    sections = _node_sections(doc, node_name)
    if not sections:
        raise ConfigError(f"{path}: no section for node {node_name!r} or '/**' "
                          f"(found {sorted(map(str, doc))})")
    values: dict[str, Any] = {}
    for section in sections:
        params = section.get("ros__parameters") if isinstance(section, Mapping) else None
        if not isinstance(params, Mapping):
            raise ConfigError(f"{path}: section for {node_name!r} has no ros__parameters "
                              f"mapping, expected {{ros__parameters: {{...}}}}")
        try:
            values.update(flatten_parameters(params))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return values


def load_config_yaml(path: str | Path, node_name: str, build):
    """`build(values)` applied to `node_name`'s parameters in a ROS parameter YAML file; every
    error message is prefixed with the file."""
    values = load_node_parameters(path, node_name)
    try:
        return build(values)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {e}" for e in exc.errors]) from exc
