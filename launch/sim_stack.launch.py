"""The simulated training stack: sim bridge, state estimator, controller executor (one arm,
under ``namespace``), the dynamics fitter and the LQR-FLM trainer.

    ros2 launch launch/sim_stack.launch.py task:=reach iterations:=5 out:=runs/sim-stack
    ros2 launch launch/sim_stack.launch.py mode:=realtime namespace:=arm1

``mode`` sets both ends of the arm: ``lockstep`` (default; each command advances one policy step
of physics, on sim time, as fast as the nodes exchange messages) or ``realtime`` (1 kHz wall
clock). The trainer runs one session and exits when it is done; summary.json, controllers.npz,
training.png and the rollouts/ MCAP bag are written to ``out``. ``mbpl train --graph ros`` starts
the same processes without launch (and several arms with --workers).

Nodes are started through the `mbpl` console script, with the parameter files under config/.
"""

import os
from pathlib import Path

from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description import LaunchDescription
from launch.substitutions import EqualsSubstitution, LaunchConfiguration

from mbpl_ros.realtime import realtime_dds_variables

CONFIG = Path(__file__).resolve().parents[1] / "config"


def node(name: str, params_file: str, *overrides, namespaced: bool = True,
         env: dict | None = None, condition=None) -> ExecuteProcess:
    cmd = ["mbpl", "node", name, "--ros-args", "--params-file", str(CONFIG / params_file)]
    if namespaced:
        cmd += ["-r", ["__ns:=/", LaunchConfiguration("namespace")]]
    return ExecuteProcess(cmd=[*cmd, *overrides], name=name, output="screen",
                          additional_env=env, condition=condition)


def arg(name: str) -> list:
    """``-p name:=<launch argument name>``."""
    return ["-p", [f"{name}:=", LaunchConfiguration(name)]]


def generate_launch_description() -> LaunchDescription:
    # The executor's Fast DDS reception and timed-events threads at its loop's SCHED_FIFO
    # priority, where that is permitted and the environment names no profile of its own
    # (config/fastdds_realtime.xml).
    realtime_dds = realtime_dds_variables(os.environ)
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="robot namespace"),
        DeclareLaunchArgument("backend", default_value="mujoco", description="mujoco or pybullet"),
        DeclareLaunchArgument("mode", default_value="lockstep",
                              description="lockstep (sim time) or realtime (1 kHz wall clock)"),
        DeclareLaunchArgument("task", default_value="reach", description="reach or peg"),
        DeclareLaunchArgument("conditions", default_value="2"),
        DeclareLaunchArgument("samples", default_value="5"),
        DeclareLaunchArgument("iterations", default_value="10"),
        DeclareLaunchArgument("horizon", default_value="100"),
        DeclareLaunchArgument("seed", default_value="0"),
        DeclareLaunchArgument("out", default_value="runs/sim-stack",
                              description="run directory of the trainer"),
        DeclareLaunchArgument("resume", default_value="false",
                              description="continue the session in out"),
    ]
    trainer = node(
        "gps_trainer", "gps_trainer.yaml",
        *arg("task"), *arg("backend"), *arg("conditions"), *arg("samples"),
        *arg("iterations"), *arg("horizon"), *arg("seed"), *arg("out"), *arg("resume"),
        "-p", ["namespaces:=['", LaunchConfiguration("namespace"), "']"],
        namespaced=False)
    realtime = EqualsSubstitution(LaunchConfiguration("mode"), "realtime")
    return LaunchDescription([
        *arguments,
        node("sim_bridge", "sim_bridge.yaml", *arg("backend"), *arg("mode"), *arg("task"),
             *arg("conditions"), *arg("seed")),
        # One condition table (task, conditions, seed) for bridge, estimator, executor, trainer.
        node("state_estimator", "state_estimator.yaml", *arg("task"), *arg("conditions"),
             *arg("seed")),
        *(node("controller_executor", "controller_executor.yaml", *arg("mode"), *arg("task"),
               *arg("conditions"), *arg("seed"), env=env, condition=condition)
          for env, condition in ((realtime_dds, IfCondition(realtime)),
                                 (None, UnlessCondition(realtime)))),
        node("dynamics_fitter", "dynamics_fitter.yaml", namespaced=False),
        trainer,
        # The session is over when the trainer exits: take the stack down with it.
        RegisterEventHandler(OnProcessExit(target_action=trainer,
                                           on_exit=[EmitEvent(event=Shutdown(
                                               reason="training session finished"))])),
    ])
