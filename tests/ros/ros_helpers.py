"""Helpers that start real nodes as processes and a real rclpy client in the test process.

Every test session gets its own ROS_DOMAIN_ID so parallel runs on one machine do not cross-talk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import rclpy
import rclpy.executors

from mbpl_ros.training.ros_graph import claim_domain_id

# One domain per test session, claimed with a lock file that other sessions and `mbpl train
# --graph ros` runs on this machine respect, so concurrent runs never see each other's nodes.
if not os.environ.get("ROS_DOMAIN_ID"):
    os.environ["ROS_DOMAIN_ID"], _DOMAIN_LOCK = claim_domain_id()
os.environ.setdefault("MUJOCO_GL", "egl")


def ros_args(params: dict[str, object]) -> list[str]:
    args = ["--ros-args"]
    for key, value in params.items():
        if isinstance(value, bool):
            value = str(value).lower()
        args += ["-p", f"{key}:={value}"]
    return args


@contextmanager
def node_process(module: str, params: dict[str, object] | None = None,
                 namespace: str | None = None,
                 env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run ``python -m module --ros-args ...`` and stop it with SIGINT (then SIGKILL) at exit."""
    cmd = [sys.executable, "-m", module, *ros_args(params or {})]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_client_node():
    """A fresh rclpy context and client node; shut down after the test."""
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"test_client_{os.getpid()}", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    node.executor_for_test = executor
    return node


def destroy_client_node(node) -> None:
    context = node.context
    node.executor_for_test.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_until(node, predicate: Callable[[], bool], timeout: float) -> bool:
    """Spin the node's executor until ``predicate()`` holds or ``timeout`` (s) passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        node.executor_for_test.spin_once(timeout_sec=0.01)
        if predicate():
            return True
    return predicate()


def call_service(node, srv_type, name: str, request, timeout: float = 10.0):
    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {name} did not appear within {timeout} s")
    future = client.call_async(request)
    if not spin_until(node, future.done, timeout):
        raise TimeoutError(f"service {name} did not answer within {timeout} s")
    node.destroy_client(client)
    return future.result()


def unmatched_after(node, endpoints, timeout: float = 60.0) -> list[str]:
    """Spin until every publisher has a matched subscription and every subscription a matched
    publisher, or ``timeout`` passes; the topics still unmatched (empty: all matched). A node
    found in the graph is not yet matched: on a loaded machine the endpoints can take seconds
    more, and a volatile message sent meanwhile is lost."""
    def matched(endpoint) -> bool:
        if hasattr(endpoint, "get_subscription_count"):
            return endpoint.get_subscription_count() > 0
        return endpoint.get_publisher_count() > 0
    spin_until(node, lambda: all(matched(e) for e in endpoints), timeout)
    return [e.topic_name for e in endpoints if not matched(e)]


def thread_schedules(pid: int) -> dict[str, set[tuple[int, int]]]:
    """Thread name -> the (scheduling policy, real-time priority) pairs of a process's threads
    of that name, from /proc (policy 1: SCHED_FIFO)."""
    schedules: dict[str, set[tuple[int, int]]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on
        schedules.setdefault(name, set()).add((int(fields[38]), int(fields[37])))
    return schedules
