"""MuJoCo backend: the URDF loaded with MjSpec, actuators, task scene and camera added in code.

Model construction:
  * ``MjSpec.from_file`` on the URDF. MuJoCo resolves mesh files relative to the URDF's folder and
    reads STL/OBJ only (no ``package://`` URIs). A ``<mujoco><compiler .../></mujoco>`` block in the
    URDF is honoured; ``fusestatic`` is switched off here in any case so that fixed links (tool,
    peg tip, camera frames) remain bodies, and ``inertiafromgeom`` is off so that a link without
    ``<inertial>`` stays massless instead of getting the mass of its geoms. Without
    ``discardvisual="false"`` in that block MuJoCo drops the URDF visuals and renders the
    collision geometry instead.
  * one ``motor`` actuator per joint (gear 1, ctrlrange = ± URDF effort); the URDF effort also
    becomes MuJoCo's joint ``actfrcrange``. Their controls are set before every ``mj_step``, one
    physics step at a time, because the drives' torque-speed curve (:mod:`mbpl_sim.base`) depends
    on the velocity of that step.
  * gravity compensation as body ``gravcomp = 1`` on the arm's bodies (a passive force, outside the
    actuator limits).
  * Euler integrator with ``eulerdamp`` disabled, i.e. joint damping is explicit, as in PyBullet
    and in the continuous model M qdd + C qd + g = tau - D qd.
  * arm geoms: contype 1, conaffinity 0 (no self collision); table and block: contype 0,
    conaffinity 1; the reach target is visual only.

``MUJOCO_GL`` defaults to ``egl`` (headless offscreen rendering) if unset when this module is
imported first.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (MUJOCO_GL must be set before the import)
import numpy as np  # noqa: E402

from mbpl_sim.base import (  # noqa: E402
    ArmSim,
    EngineJoints,
    SimConfig,
    look_at_rotation,
    scene_stand,
)
from mbpl_sim.description import ArmDescription  # noqa: E402
from mbpl_sim.errors import UrdfError  # noqa: E402
from mbpl_sim.tasks import TaskSpec  # noqa: E402

_CAMERA_NAME = "mbpl_camera"
_TARGET_BODY = "mbpl_target"
_FOOT_BODY = "mbpl_target_foot"
_OPTICAL_TO_MUJOCO_CAMERA = np.array([0.0, 1.0, 0.0, 0.0])
"""Quaternion (w, x, y, z) of 180 deg about x: MuJoCo cameras look along -z with +y up."""
_ARM_CONTYPE, _ARM_CONAFFINITY = 1, 0
_WORLD_CONTYPE, _WORLD_CONAFFINITY = 0, 1
_TASK_GROUP = 2
_TARGET_RGBA = (0.9, 0.1, 0.1, 1.0)
_BLOCK_RGBA = (0.2, 0.6, 0.3, 1.0)
_TABLE_RGBA = (0.55, 0.45, 0.35, 1.0)


class MujocoSim(ArmSim):
    """:class:`ArmSim` on MuJoCo. See the module docstring for how the model is built."""

    def __init__(self, description: ArmDescription, task: TaskSpec, config: SimConfig) -> None:
        super().__init__(description, task, config)
        spec = _load_spec(description)
        spec.compiler.fusestatic = False
        # A link without <inertial> is massless (URDF), not a solid of its geoms' volume.
        spec.compiler.inertiafromgeom = mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_FALSE
        spec.option.timestep = config.timestep
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_EULER
        spec.option.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_EULERDAMP)
        spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, 1024)
        spec.visual.global_.offheight = max(spec.visual.global_.offheight, 1024)

        arm_bodies = [b for b in spec.bodies if b.name != "world"]
        arm_body_names = {b.name for b in arm_bodies}
        self._has_visuals = False
        for geom in spec.geoms:
            if geom.contype or geom.conaffinity:
                geom.contype, geom.conaffinity = _ARM_CONTYPE, _ARM_CONAFFINITY
            else:
                self._has_visuals = True
        if config.gravity_compensation:
            for body in arm_bodies:
                body.gravcomp = 1.0
        for name, effort in zip(description.joint_names, description.effort_limits, strict=True):
            actuator = spec.add_actuator()
            actuator.name = f"{name}_motor"
            actuator.target = name
            actuator.trntype = mujoco.mjtTrn.mjTRN_JOINT
            actuator.set_to_motor()
            actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
            actuator.ctrlrange = [-effort, effort]
        _add_scene(spec, task, config)
        _add_camera(spec, config, arm_body_names)
        try:
            model = spec.compile()
        except ValueError as err:
            raise UrdfError(f"MuJoCo cannot compile {description.urdf_path.name}: {err}") from err

        model.geom_friction[:, 0] = config.contact_friction  # contacts take the larger value
        model.vis.map.znear = config.camera_near / model.stat.extent
        model.vis.map.zfar = config.camera_far / model.stat.extent
        self._model = model
        self._data = mujoco.MjData(model)
        joints = [model.joint(name) for name in description.joint_names]
        self._qadr = np.array([j.qposadr[0] for j in joints])
        self._dadr = np.array([j.dofadr[0] for j in joints])
        # Row k of _unit_torques: a unit torque on joint k; mj_solveM turns it into row k of
        # M^-1, whose entry on joint k's dof (flat index _own) is (M^-1)_kk.
        self._unit_torques = np.zeros((len(joints), model.nv))
        self._own = np.arange(len(joints)) * model.nv + self._dadr
        self._unit_torques.flat[self._own] = 1.0
        self._ee_body = model.body(description.ee_link).id
        target_body = model.body(_TARGET_BODY).id
        self._target_body = target_body
        self._mocap = model.body_mocapid[target_body]
        self._stand = scene_stand(task, config)
        self._foot_mocap = (None if self._stand is None
                            else model.body_mocapid[model.body(_FOOT_BODY).id])
        self._arm_body_ids = np.array([model.body(name).id for name in arm_body_names])
        self._camera = model.camera(_CAMERA_NAME).id
        self._scene_option = mujoco.MjvOption()
        if self._has_visuals:
            self._scene_option.geomgroup[0] = 0  # collision geoms hidden behind the visuals
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._stale = True
        centre = (task.target_low + task.target_high) / 2
        self._place_target(centre)
        self._set_state(np.clip(np.zeros(description.n_joints), description.lower,
                                description.upper), np.zeros(description.n_joints))

    @property
    def model(self) -> mujoco.MjModel:
        """The compiled MuJoCo model (read it; changing it is at the caller's risk)."""
        return self._model

    def joint_positions(self) -> np.ndarray:
        self._check_open()
        return self._data.qpos[self._qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        self._check_open()
        return self._data.qvel[self._dadr].copy()

    def target_position(self) -> np.ndarray:
        self._check_open()
        self._refresh()
        return self._data.xpos[self._target_body].copy()

    def engine_joints(self) -> EngineJoints:
        self._check_open()
        model = self._model
        ids = [model.joint(name).id for name in self.description.joint_names]
        ctrl = model.actuator_ctrlrange
        return EngineJoints(
            names=tuple(model.joint(i).name for i in ids),
            lower=model.jnt_range[ids, 0].copy(),
            upper=model.jnt_range[ids, 1].copy(),
            effort=np.minimum(-ctrl[:, 0], ctrl[:, 1]),
            damping=model.dof_damping[self._dadr].copy(),
        )

    def n_contacts(self) -> int:
        self._check_open()
        self._refresh()
        ncon = self._data.ncon
        if ncon == 0:
            return 0
        bodies = self._model.geom_bodyid[self._data.contact.geom[:ncon]]
        on_arm = np.isin(bodies, self._arm_body_ids)
        return int(np.count_nonzero(on_arm[:, 0] != on_arm[:, 1]))

    def _reset_engine(self) -> None:
        mujoco.mj_resetData(self._model, self._data)
        self._stale = True

    def _place_target(self, position: np.ndarray) -> None:
        self._data.mocap_pos[self._mocap] = position
        if self._stand is not None:
            self._data.mocap_pos[self._foot_mocap] = self._stand.foot_position(position)
        self._stale = True

    def _set_state(self, q: np.ndarray, qd: np.ndarray) -> None:
        self._data.qpos[self._qadr] = q
        self._data.qvel[self._dadr] = qd
        self._data.qacc_warmstart[:] = 0.0
        mujoco.mj_forward(self._model, self._data)
        self._stale = False

    def _step(self, torque: np.ndarray, n_steps: int) -> None:
        model, data, dofs = self._model, self._data, self._dadr
        unit, command = self._unit_torques, torque.tolist()
        response = np.empty_like(unit)
        for _ in range(n_steps):
            # qLD is the factorised M of the last mj_step or mj_forward: at most one step old.
            mujoco.mj_solveM(model, data, response, unit)
            data.ctrl[:] = self._drive_torque(command, data.qvel.take(dofs).tolist(),
                                              response.take(self._own).tolist())
            mujoco.mj_step(model, data)
        self._stale = True  # mj_step leaves positions-derived quantities one step behind

    def _ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        return (self._data.xpos[self._ee_body].copy(),
                self._data.xmat[self._ee_body].reshape(3, 3).copy())

    def _render(self, width: int, height: int) -> np.ndarray:
        self._refresh()
        renderer = self._renderers.get((width, height))
        if renderer is None:
            renderer = mujoco.Renderer(self._model, height=height, width=width)
            self._renderers[(width, height)] = renderer
        renderer.update_scene(self._data, camera=self._camera, scene_option=self._scene_option)
        return renderer.render().copy()

    def _close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def _refresh(self) -> None:
        if self._stale:
            mujoco.mj_forward(self._model, self._data)
            self._stale = False


def _load_spec(description: ArmDescription) -> mujoco.MjSpec:
    try:
        spec = mujoco.MjSpec.from_file(str(description.urdf_path))
    except ValueError as err:
        raise UrdfError(f"MuJoCo cannot load {description.urdf_path}: {err}") from err
    joint_names = {j.name for j in spec.joints}
    missing = [name for name in description.joint_names if name not in joint_names]
    if missing:
        raise UrdfError(f"MuJoCo model of {description.urdf_path.name} lacks joints {missing}")
    return spec


def _add_scene(spec: mujoco.MjSpec, task: TaskSpec, config: SimConfig) -> None:
    """Table plane, task object (mocap body ``mbpl_target``) and a light."""
    world = spec.worldbody
    if config.table:
        world.add_geom(name="mbpl_table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.5, 1.5, 0.05],
                       rgba=_TABLE_RGBA, contype=_WORLD_CONTYPE, conaffinity=_WORLD_CONAFFINITY,
                       group=_TASK_GROUP)
    world.add_light(name="mbpl_light", pos=[0.5, 0.5, 2.5], dir=[-0.1, -0.2, -1.0],
                    type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, castshadow=False,
                    diffuse=[0.7, 0.7, 0.7])
    target = world.add_body(name=_TARGET_BODY, mocap=True)
    if task.hole is None:
        target.add_geom(name="mbpl_target_sphere", type=mujoco.mjtGeom.mjGEOM_SPHERE,
                        size=[task.target_radius, 0, 0], rgba=_TARGET_RGBA, contype=0,
                        conaffinity=0, group=_TASK_GROUP)
        stand = scene_stand(task, config)
        if stand is not None:
            half = stand.rod_length / 2
            target.add_geom(name="mbpl_target_rod", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                            size=[stand.rod_radius, half, 0],
                            pos=[0, 0, -(task.target_radius + half)], rgba=stand.rgba,
                            contype=0, conaffinity=0, group=_TASK_GROUP)
            foot = world.add_body(name=_FOOT_BODY, mocap=True)
            foot.add_geom(name="mbpl_target_foot", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                          size=[stand.foot_radius, stand.foot_thickness / 2, 0], rgba=stand.rgba,
                          contype=0, conaffinity=0, group=_TASK_GROUP)
        return
    for index, (centre, half) in enumerate(task.hole.boxes()):
        target.add_geom(name=f"mbpl_block_{index}", type=mujoco.mjtGeom.mjGEOM_BOX, pos=centre,
                        size=half, rgba=_BLOCK_RGBA, contype=_WORLD_CONTYPE,
                        conaffinity=_WORLD_CONAFFINITY, group=_TASK_GROUP)


def _add_camera(spec: mujoco.MjSpec, config: SimConfig, body_names: set[str]) -> None:
    """Camera on the URDF camera frame, or at the fallback pose in the world."""
    if config.camera_eye is None and config.camera_frame in body_names:
        spec.body(config.camera_frame).add_camera(
            name=_CAMERA_NAME, pos=[0, 0, 0], quat=_OPTICAL_TO_MUJOCO_CAMERA,
            fovy=config.camera_fovy_deg)
        return
    eye, look_at = config.fixed_camera()
    rotation = look_at_rotation(eye, look_at)
    camera_axes = rotation @ np.diag([1.0, -1.0, -1.0])  # optical -> MuJoCo camera axes
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, camera_axes.reshape(-1))
    spec.worldbody.add_camera(name=_CAMERA_NAME, pos=eye, quat=quat,
                              fovy=config.camera_fovy_deg)
