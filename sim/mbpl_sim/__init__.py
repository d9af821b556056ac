"""Simulation stand-in for the arm: one interface, MuJoCo and PyBullet backends.

Build a simulator from any serial-arm URDF and the name of its end-effector link::

    sim = make_sim("mujoco", task="peg")          # arm7.urdf, ee link "peg_tip"
    arm, task = sim.description, sim.task
    condition = make_conditions(task, arm, 1, np.random.default_rng(0))[0]
    sim.reset(condition)
    sim.step(np.zeros(arm.n_joints), n_steps=50)  # 50 ms at 1 kHz
    image = sim.render()                          # (64, 64, 3) uint8

The engines are imported only when a backend is built.
"""

from __future__ import annotations

from pathlib import Path

from mbpl_sim.base import ArmSim, EngineJoints, SimConfig
from mbpl_sim.benchmark import measure_backend
from mbpl_sim.description import ArmDescription
from mbpl_sim.errors import SimError, TaskError, UrdfError
from mbpl_sim.tasks import (
    TASK_NAMES,
    Condition,
    HoleGeometry,
    TaskSpec,
    conditions_between,
    goal_configuration,
    make_conditions,
    make_task,
    ready_configuration,
)

BACKENDS = ("mujoco", "pybullet")
"""Names accepted by :func:`make_sim`."""

DEFAULT_EE_LINK = "peg_tip"
"""End-effector link of ``arm7.urdf``: the tip of the peg, z axis along the peg."""

__all__ = [
    "BACKENDS",
    "DEFAULT_EE_LINK",
    "TASK_NAMES",
    "ArmDescription",
    "ArmSim",
    "Condition",
    "EngineJoints",
    "HoleGeometry",
    "SimConfig",
    "SimError",
    "TaskError",
    "TaskSpec",
    "UrdfError",
    "conditions_between",
    "default_urdf",
    "goal_configuration",
    "make_conditions",
    "make_sim",
    "make_task",
    "measure_backend",
    "ready_configuration",
]


def default_urdf() -> Path:
    """Path of the project's ``urdf/arm7.urdf`` (found next to the ``sim/`` source folder).

    Raises:
        SimError: the package is not run from a source checkout (editable install), so the URDF
            is not next to it; pass ``urdf_path`` explicitly then.
    """
    path = Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf"
    if not path.is_file():
        raise SimError(f"default URDF not found: expected {path} (mbpl_sim must be installed "
                       "editable from the repository); pass urdf_path explicitly")
    return path


def make_sim(
    backend: str,
    urdf_path: str | Path | None = None,
    ee_link: str | None = None,
    task: str | TaskSpec = "reach",
    gravity_compensation: bool = True,
    **config,
) -> ArmSim:
    """Build a simulator of the serial arm in ``urdf_path`` ending at ``ee_link``.

    Args:
        backend: one of :data:`BACKENDS`.
        urdf_path: URDF file; default :func:`default_urdf`.
        ee_link: end-effector link; default :data:`DEFAULT_EE_LINK` (required with another URDF).
        task: a :class:`TaskSpec` or a task name (:data:`TASK_NAMES`) for the default geometry.
        gravity_compensation: add g(q) to the commanded torques (see :mod:`mbpl_sim.base`).
        **config: further :class:`SimConfig` fields (timestep, camera_frame, camera_fovy_deg,...).

    Raises:
        ValueError: unknown backend (the message lists the valid ones) or bad config field.
        UrdfError: the URDF or link cannot be used. TaskError: unknown task name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if urdf_path is None:
        urdf_path = default_urdf()
        ee_link = DEFAULT_EE_LINK if ee_link is None else ee_link
    elif ee_link is None:
        raise ValueError(f"ee_link is required with a URDF other than the default ({urdf_path})")
    description = ArmDescription.from_urdf(urdf_path, ee_link)
    spec = make_task(task) if isinstance(task, str) else task
    try:
        settings = SimConfig(gravity_compensation=gravity_compensation, **config)
    except TypeError as err:
        raise ValueError(f"make_sim: {err}; SimConfig fields are "
                         f"{list(SimConfig.__dataclass_fields__)}") from err
    if backend == "mujoco":
        from mbpl_sim.mujoco_backend import MujocoSim

        return MujocoSim(description, spec, settings)
    from mbpl_sim.pybullet_backend import PybulletSim

    return PybulletSim(description, spec, settings)
