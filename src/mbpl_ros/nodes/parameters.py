"""Declaring a node's parameters once, each with its default and description, and reading the
robot they name."""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from mbpl_sim import DEFAULT_EE_LINK, default_urdf
from mbpl_sim.description import ArmDescription


def declare_parameters(node: Node, specs: dict[str, tuple[object, str]]) -> dict[str, object]:
    """Declare ``{name: (default, description)}`` on ``node``; returns the values in effect."""
    values = {}
    for name, (default, description) in specs.items():
        node.declare_parameter(name, default, ParameterDescriptor(description=description))
        values[name] = node.get_parameter(name).value
    return values


def arm_description(urdf: str, ee_link: str) -> ArmDescription:
    """The arm of the ``urdf`` and ``ee_link`` parameters (empty: the project's 7-DoF arm and its
    tool link; another URDF needs its end-effector link named)."""
    ee_link = ee_link or (DEFAULT_EE_LINK if not urdf else "")
    if not ee_link:
        raise ValueError("ee_link: expected the end-effector link of the given urdf, found ''")
    return ArmDescription.from_urdf(urdf or str(default_urdf()), ee_link)
