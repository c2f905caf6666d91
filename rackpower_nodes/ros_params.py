"""Declare a node's parameters from a core `ParamSpec` table and read them back.

Every parameter gets its description (with units), read-only flag and numeric range in its
descriptor, so `ros2 param describe` tells an operator what each one means. Types are checked
by the core's config builder, which names the key, the value and what was expected; parameters
are therefore declared with dynamic typing (a YAML `20` for a double is accepted as 20.0).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node



class ParameterError(ValueError):
    """A parameter override that ROS itself rejected (e.g. outside its declared range)."""


_TYPE_NAMES = {
    "string": "string", "integer": "integer", "double": "double", "bool": "bool",
    "string_array": "string[]", "integer_array": "integer[]", "double_array": "double[]",
}


def declare_from_specs(node: Node, specs: Iterable[Any]) -> dict[str, Any]:
    """Declare each spec on `node`; return {dotted name: value} after overrides."""
    values: dict[str, Any] = {}
    for spec in specs:
        descriptor = ParameterDescriptor(
            description=f"{spec.description} [{_TYPE_NAMES.get(spec.type, spec.type)}]",
            read_only=spec.read_only, dynamic_typing=True)
        if spec.range is not None and spec.type == "double":
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
        elif spec.range is not None and spec.type == "integer":
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor)
        except InvalidParameterValueException as exc:
            raise ParameterError(
                f"{spec.name}: rejected ({exc}); expected {spec.description}") from exc
        value = param.value
        values[spec.name] = list(value) if isinstance(value, (tuple, list)) else value
    return values
