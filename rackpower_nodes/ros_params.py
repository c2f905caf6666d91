"""Declare a node's parameters from a core `ParamSpec` table, read them back, and reject
parameter overrides the node does not declare.

Every parameter gets its description (with units), read-only flag, numeric range and, in
`additional_constraints`, its choices, range or "required" in words, so `ros2 param describe`
tells an operator what each one means and may be. Types are checked by the core's config
builder, which names the key, the value and what was expected; parameters are therefore
declared with dynamic typing (a YAML `20` for a double is accepted as 20.0). A required
(safety-critical) parameter is declared without a value, so the builder reports it missing.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rcl_interfaces.srv import ListParameters
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node

from rackpower_nodes.core.params import ConfigError, unknown_key_errors


class ParameterError(ValueError):
    """A parameter override that ROS itself rejected (e.g. outside its declared range)."""


_TYPE_NAMES = {
    "string": "string", "integer": "integer", "double": "double", "bool": "bool",
    "string_array": "string[]", "integer_array": "integer[]", "double_array": "double[]",
}


def descriptor_for(spec: Any) -> ParameterDescriptor:
    """The ROS descriptor of one `ParamSpec`: description [type], constraints, range."""
    constraints = spec.constraints()
    descriptor = ParameterDescriptor(
        description=f"{spec.description} [{_TYPE_NAMES.get(spec.type, spec.type)}]"
                    + (f" ({constraints})" if constraints else ""),
        additional_constraints=constraints, read_only=spec.read_only, dynamic_typing=True)
    if spec.range is not None and spec.type == "double":
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    elif spec.range is not None and spec.type == "integer":
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
    return descriptor


def declare_from_specs(node: Node, specs: Iterable[Any], strict: bool = True) -> dict[str, Any]:
    """Declare each spec on `node`; return {dotted name: value} after overrides.

    With `strict` (the default) an override the node received (params file or -p) that no
    spec declares is returned too, so that the core config builder, which rejects unknown
    keys, names it together with every other error before the node does anything else
    (`run_node` checks again with `reject_undeclared_overrides`). A required spec without a
    value reads as None.
    """
    values: dict[str, Any] = {}
    for spec in specs:
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor_for(spec))
        except InvalidParameterValueException as exc:
            raise ParameterError(
                f"{spec.name}: rejected ({exc}); expected {spec.description}") from exc
        value = param.value
        values[spec.name] = list(value) if isinstance(value, (tuple, list)) else value
    if strict:
        values.update({name: p.value for name, p in undeclared_overrides(node).items()})
    return values


def undeclared_overrides(node: Node) -> dict[str, Any]:
    """{name: Parameter} of the overrides `node` received but does not declare.

    rclpy keeps the overrides meant for this node (its --params-file sections, `/**` ones
    included, and -p) in `Node._parameter_overrides`; parameters rclpy declares itself
    (use_sim_time, ...) count as declared.
    """
    given = getattr(node, "_parameter_overrides", {}) or {}
    return {name: p for name, p in given.items() if not node.has_parameter(name)}


def reject_undeclared_overrides(node: Node) -> None:
    """ConfigError naming every parameter override `node` received but does not declare,
    each with the declared key it probably meant (difflib), e.g. `budget.breaker_amps: not a
    parameter of pdu_actuator; did you mean 'budget.breaker_a'?`. Call it once the node has
    declared everything.
    """
    undeclared = undeclared_overrides(node)
    if not undeclared:
        return
    declared = node.list_parameters([], ListParameters.Request.DEPTH_RECURSIVE).names
    raise ConfigError(unknown_key_errors(undeclared, declared, node.get_name()))
