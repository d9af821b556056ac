"""Training on a real torque-controlled arm: state estimator, controller executor (realtime), the
dynamics fitter and the LQR-FLM trainer; no simulator.

    ros2 launch launch/real_arm.launch.py urdf:=/path/arm.urdf ee_link:=tool0 out:=runs/arm

The arm's ros2_control must run a joint_state_broadcaster (``/joint_states``) and an effort
forward command controller named ``effort_controller`` (``/effort_controller/commands``,
std_msgs/Float64MultiArray, one effort per joint in the URDF's joint order). The executor runs its
1 kHz loop in realtime mode, resets each trial with its PD controller, and stops the arm on its
watchdogs (stale state, limits) or on ``~/estop``. Trials run at the pace of the arm, so keep
horizon x dt and the number of trials per iteration modest.

Nodes are started through the `mbpl` console script, with the parameter files under config/.
"""

import os
from pathlib import Path

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration

from mbpl_ros.realtime import realtime_dds_variables

CONFIG = Path(__file__).resolve().parents[1] / "config"
JOINT_STATES = "/joint_states"
EFFORT_COMMANDS = "/effort_controller/commands"


def node(name: str, params_file: str, *overrides, env: dict | None = None) -> ExecuteProcess:
    cmd = ["mbpl", "node", name, "--ros-args", "--params-file", str(CONFIG / params_file)]
    return ExecuteProcess(cmd=[*cmd, *overrides], name=name, output="screen",
                          additional_env=env)


def arg(name: str) -> list:
    """``-p name:=<launch argument name>``."""
    return ["-p", [f"{name}:=", LaunchConfiguration(name)]]


def generate_launch_description() -> LaunchDescription:
    # The executor's Fast DDS reception and timed-events threads at its loop's SCHED_FIFO
    # priority, where that is permitted and the environment names no profile of its own
    # (config/fastdds_realtime.xml).
    realtime_dds = realtime_dds_variables(os.environ)
    return LaunchDescription([
        DeclareLaunchArgument("urdf", description="the arm's URDF"),
        DeclareLaunchArgument("ee_link", description="end-effector link of the URDF"),
        DeclareLaunchArgument("task", default_value="reach", description="reach or peg"),
        DeclareLaunchArgument("conditions", default_value="2"),
        DeclareLaunchArgument("samples", default_value="5"),
        DeclareLaunchArgument("iterations", default_value="10"),
        DeclareLaunchArgument("horizon", default_value="100"),
        DeclareLaunchArgument("seed", default_value="0"),
        DeclareLaunchArgument("out", default_value="runs/real-arm"),
        DeclareLaunchArgument("resume", default_value="false"),
        # One condition table (task, conditions, seed) for estimator, executor and trainer.
        node("state_estimator", "state_estimator.yaml", *arg("urdf"), *arg("ee_link"),
             *arg("task"), *arg("conditions"), *arg("seed"),
             "-r", f"joint_states:={JOINT_STATES}"),
        node("controller_executor", "controller_executor.yaml", *arg("urdf"), *arg("ee_link"),
             *arg("task"), *arg("conditions"), *arg("seed"), "-p", "mode:=realtime",
             "-r", f"effort_controller/commands:={EFFORT_COMMANDS}", env=realtime_dds),
        node("dynamics_fitter", "dynamics_fitter.yaml"),
        node("gps_trainer", "gps_trainer.yaml", *arg("urdf"), *arg("ee_link"), *arg("task"),
             *arg("conditions"), *arg("samples"), *arg("iterations"), *arg("horizon"),
             *arg("seed"), *arg("out"), *arg("resume"), "-p", "backend:=real",
             "-p", "namespaces:=['/']"),
    ])
