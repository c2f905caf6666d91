"""The ROS helpers every rackpower node shares, and the only module nodes share: QoS
profiles, message array conversion, publishing from a node's own threads, `/diagnostics`, and
parameter declaration from a core `ParamSpec` table.

Nodes import this module (and :mod:`rackpower_nodes.nodes.main`, their process runner), never
each other. It is kept free of heavy imports (torch, lightgbm, pymodbus): every node imports
it, and a node that needs none of those must not pay for them at start or at exit.

Parameters: every one gets its description (with units), read-only flag, numeric range and,
in `additional_constraints`, its choices, range or "required" in words, so `ros2 param
describe` tells an operator what each one means and may be. Types are checked by the core's
config builder, which names the key, the value and what was expected; parameters are therefore
declared with dynamic typing (a YAML `20` for a double is accepted as 20.0). A required
(safety-critical) parameter is declared without a value, so the builder reports it missing.
Overrides the node does not declare are rejected (:func:`reject_undeclared_overrides`).
"""
from __future__ import annotations

import array
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rcl_interfaces.srv import ListParameters
from rclpy._rclpy_pybind11 import RCLError
from rclpy.duration import Duration
from rclpy.exceptions import InvalidHandle, InvalidParameterValueException
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from rackpower_nodes.core.params import ConfigError, unknown_key_errors


# -- QoS profiles and message conversion -------------------------------------------------------

def samples_qos(deadline_s: float) -> QoSProfile:
    """Measurement streams (power_samples, host_telemetry): sensor-data QoS (best effort, keep
    last 10) with a deadline of `deadline_s` seconds, so subscribers notice a stall."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10,
        reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
        deadline=Duration(seconds=deadline_s))


def forecast_qos() -> QoSProfile:
    """Forecasts: reliable, keep last 5."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Latest state (model_update, the current allocation): reliable, transient local,
    depth 1, so a late subscriber gets the last message."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def errors_qos() -> QoSProfile:
    """Allocation errors: reliable, keep last 100 (the retraining loop must not miss them)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def float32_array(values) -> array.array:
    """A float32[] message field from any array-like, without a per-element Python check."""
    out = array.array("f")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return out


def publish_unless_shut_down(node: Node, publisher: Publisher, msg) -> bool:
    """Publish `msg` from a thread of the node's own (reader, worker); False, without a
    traceback, when the node's context is already shut down or the publisher destroyed
    (the node is on its way out). Any other failure is raised."""
    if not node.context.ok():
        return False
    try:
        publisher.publish(msg)
        return True
    except (RCLError, InvalidHandle):
        if node.context.ok() and not _destroyed(publisher):
            raise
        return False


def _destroyed(publisher: Publisher) -> bool:
    try:
        with publisher.handle:
            return False
    except InvalidHandle:
        return True


# -- /diagnostics --------------------------------------------------------------------------------

def diagnostic_status(level: bytes, name: str, message: str, hardware_id: str,
           values: Mapping[str, object]) -> DiagnosticStatus:
    """One status; every value is shown as text."""
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def publish_diagnostics(node: Node, publisher: Publisher,
                        statuses: Iterable[DiagnosticStatus]) -> None:
    """A DiagnosticArray of `statuses`, stamped with the node's clock."""
    diag = DiagnosticArray(status=list(statuses))
    diag.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(diag)


# -- parameters ---------------------------------------------------------------------------------

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
