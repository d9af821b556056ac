"""Fixtures for the ROS tests: a real rclpy client node per test."""

import pytest

pytest.importorskip("rclpy")

from ros_helpers import destroy_client_node, make_client_node  # noqa: E402


@pytest.fixture
def ros_node():
    """A client node in its own rclpy context, with an executor at ``node.executor_for_test``."""
    node = make_client_node()
    yield node
    destroy_client_node(node)
