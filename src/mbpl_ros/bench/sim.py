"""`mbpl bench sim`: physics rate and camera frame time per backend, and the /joint_states rate
the sim bridge achieves in real-time mode (a bridge process and a subscriber process over DDS)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from mbpl_ros.processes import child_environment
from mbpl_sim.benchmark import measure_backend

BACKENDS = ("mujoco", "pybullet")


def measure_joint_states_hz(seconds: float, backend: str = "mujoco") -> float:
    """Joint-state messages per second of wall time received from a real-time bridge."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    env = dict(os.environ, ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", "77"))
    cmd = [sys.executable, "-m", "mbpl_ros.nodes.sim_bridge", "--ros-args",
           "-p", "mode:=realtime", "-p", f"backend:={backend}"]
    bridge = subprocess.Popen(cmd, env=child_environment(env), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_joint_states", context=context)
    stamps: list[float] = []
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(JointState, "joint_states", lambda _m: stamps.append(
        time.perf_counter()), qos)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30
        while len(stamps) < 100 and time.monotonic() < deadline:  # discovery and warm-up
            executor.spin_once(timeout_sec=0.05)
        stamps.clear()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            executor.spin_once(timeout_sec=0.05)
        rate = len(stamps) / seconds
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        bridge.send_signal(signal.SIGINT)
        try:
            bridge.wait(timeout=5)
        except subprocess.TimeoutExpired:
            bridge.kill()
    return rate


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="mbpl bench sim")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv or [])
    result: dict = {}
    for backend in BACKENDS:
        figures = measure_backend(backend, seconds=args.seconds)
        print(f"{backend}: {figures['steps_per_s']:.0f} physics steps/s, "
              f"{figures['frame_ms']:.1f} ms per 64x64 frame")
        result[backend] = figures
    hz = measure_joint_states_hz(args.seconds)
    print(f"sim_bridge realtime /joint_states: {hz:.0f} Hz received (target 1000)")
    result["joint_states_hz"] = hz
    return result
