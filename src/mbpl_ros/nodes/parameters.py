"""Declaring a node's parameters once, each with its default and description."""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node


def declare_parameters(node: Node, specs: dict[str, tuple[object, str]]) -> dict[str, object]:
    """Declare ``{name: (default, description)}`` on ``node``; returns the values in effect."""
    values = {}
    for name, (default, description) in specs.items():
        node.declare_parameter(name, default, ParameterDescriptor(description=description))
        values[name] = node.get_parameter(name).value
    return values
