"""Simulated arm: the sim bridge standing in for a ros2_control effort-controlled arm.

    ros2 launch launch/sim.launch.py backend:=pybullet namespace:=arm1

Nodes are started through the `mbpl` console script (the package is pip-installed), with the
parameter files under config/.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

CONFIG = Path(__file__).resolve().parents[1] / "config"


def node(name: str, params_file: str, *overrides) -> ExecuteProcess:
    cmd = ["mbpl", "node", name, "--ros-args", "--params-file", str(CONFIG / params_file),
           "-r", ["__ns:=/", LaunchConfiguration("namespace")], *overrides]
    return ExecuteProcess(cmd=cmd, name=name, output="screen")


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="robot namespace"),
        DeclareLaunchArgument("backend", default_value="mujoco", description="mujoco or pybullet"),
        DeclareLaunchArgument("mode", default_value="realtime", description="realtime or lockstep"),
        node("sim_bridge", "sim_bridge.yaml",
             "-p", ["backend:=", LaunchConfiguration("backend")],
             "-p", ["mode:=", LaunchConfiguration("mode")]),
    ])
