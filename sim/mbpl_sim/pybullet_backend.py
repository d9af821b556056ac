"""PyBullet backend: one DIRECT-mode physics client per instance (never the GUI).

Model construction and the settings that make it match MuJoCo and the rigid-body model:
  * ``loadURDF`` with ``useFixedBase=True`` and the flags URDF_USE_INERTIA_FROM_FILE and
    URDF_USE_IMPLICIT_CYLINDER. Without the first flag PyBullet recomputes inertia from the
    collision shapes (it diagonalises a URDF inertia tensor with products of inertia into
    principal axes: the same body); without the second it replaces cylinders by tessellated
    convex hulls (MuJoCo keeps true cylinders).
  * the default velocity motors are switched off (VELOCITY_CONTROL with force 0) and torques are
    applied with TORQUE_CONTROL before every physics step (PyBullet forgets them after a step),
    bounded by the drives' torque-speed curve (:mod:`mbpl_sim.base`) at that step's velocities.
  * links without ``<inertial>`` get mass 0 (PyBullet gives them 1 kg and unit inertia).
  * linear and angular link damping set to 0 (PyBullet's default 0.04 is not in the URDF); the
    URDF ``<dynamics damping>`` is applied by PyBullet as an explicit joint torque -D qd.
  * gravity compensation: g(q) from PyBullet's own inverse dynamics (zero velocity and
    acceleration), recomputed in every physics step and added to the clamped command.
  * camera: ``getCameraImage`` with ER_TINY_RENDERER (CPU, no OpenGL needed).
Arm self-collision is off (PyBullet's default for URDF models).
"""

from __future__ import annotations

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from mbpl_sim.base import (
    ArmSim,
    EngineJoints,
    SimConfig,
    look_at_rotation,
    scene_stand,
)
from mbpl_sim.description import ArmDescription
from mbpl_sim.errors import UrdfError
from mbpl_sim.tasks import TargetStand, TaskSpec

_TARGET_RGBA = (0.9, 0.1, 0.1, 1.0)
_BLOCK_RGBA = (0.2, 0.6, 0.3, 1.0)
_TABLE_RGBA = (0.55, 0.45, 0.35, 1.0)
_GRAVITY = (0.0, 0.0, -9.81)
_URDF_FLAGS = pybullet.URDF_USE_INERTIA_FROM_FILE | pybullet.URDF_USE_IMPLICIT_CYLINDER


class PybulletSim(ArmSim):
    """:class:`ArmSim` on PyBullet. See the module docstring for how the model is built."""

    def __init__(self, description: ArmDescription, task: TaskSpec, config: SimConfig) -> None:
        super().__init__(description, task, config)
        client = BulletClient(connection_mode=pybullet.DIRECT)
        self._client = client
        client.setGravity(*_GRAVITY)
        client.setPhysicsEngineParameter(fixedTimeStep=config.timestep, numSubSteps=0)
        try:
            robot = client.loadURDF(str(description.urdf_path), basePosition=[0, 0, 0],
                                    useFixedBase=True, flags=_URDF_FLAGS)
        except pybullet.error as err:
            client.disconnect()
            raise UrdfError(f"PyBullet cannot load {description.urdf_path}: {err}") from err
        self._robot = robot

        joint_index, link_index, movable = {}, {}, []
        for index in range(client.getNumJoints(robot)):
            info = client.getJointInfo(robot, index)
            joint_index[info[1].decode()] = index
            link_index[info[12].decode()] = index
            if info[2] != pybullet.JOINT_FIXED:
                movable.append(index)
        missing = [name for name in description.joint_names if name not in joint_index]
        if missing or description.ee_link not in link_index:
            client.disconnect()
            raise UrdfError(f"PyBullet model of {description.urdf_path.name} lacks joints "
                            f"{missing} or link {description.ee_link!r}")
        self._joints = [joint_index[name] for name in description.joint_names]
        if sorted(self._joints) != movable:
            client.disconnect()
            raise UrdfError(f"PyBullet found movable joints {movable}, expected exactly the "
                            f"chain {description.joint_names}")
        # PyBullet's inverse dynamics takes the movable joints in index order.
        self._dof_order = np.argsort(self._joints)
        self._ee_link = link_index[description.ee_link]
        self._camera_link = link_index.get(config.camera_frame)

        client.setJointMotorControlArray(robot, self._joints, pybullet.VELOCITY_CONTROL,
                                         forces=[0.0] * len(self._joints))
        for link in range(-1, client.getNumJoints(robot)):
            client.changeDynamics(robot, link, linearDamping=0.0, angularDamping=0.0)
        for name in description.massless_links:
            if name in link_index:  # PyBullet gave it 1 kg and unit inertia
                client.changeDynamics(robot, link_index[name], mass=0.0,
                                      localInertiaDiagonal=[0.0, 0.0, 0.0])
        self._zeros = [0.0] * len(self._joints)
        if config.table:
            half = [1.5, 1.5, 0.01]
            client.createMultiBody(
                baseMass=0.0,
                baseCollisionShapeIndex=client.createCollisionShape(pybullet.GEOM_BOX,
                                                                    halfExtents=half),
                baseVisualShapeIndex=client.createVisualShape(pybullet.GEOM_BOX, halfExtents=half,
                                                              rgbaColor=_TABLE_RGBA),
                basePosition=[0.0, 0.0, -half[2]],
            )
        self._target = _create_task_object(client, task)
        self._stand = scene_stand(task, config)
        self._stand_bodies = (None if self._stand is None
                              else _create_stand(client, task, self._stand))
        # Bullet multiplies the two bodies' coefficients.
        friction = float(np.sqrt(config.contact_friction))
        for body in range(client.getNumBodies()):
            body_id = client.getBodyUniqueId(body)
            for link in range(-1, client.getNumJoints(body_id)):
                client.changeDynamics(body_id, link, lateralFriction=friction)
        self._projection: dict[tuple[int, int], list[float]] = {}
        centre = (task.target_low + task.target_high) / 2
        self._place_target(centre)
        self._set_state(np.clip(np.zeros(description.n_joints), description.lower,
                                description.upper), np.zeros(description.n_joints))

    def joint_positions(self) -> np.ndarray:
        self._check_open()
        states = self._client.getJointStates(self._robot, self._joints)
        return np.array([s[0] for s in states])

    def joint_velocities(self) -> np.ndarray:
        self._check_open()
        states = self._client.getJointStates(self._robot, self._joints)
        return np.array([s[1] for s in states])

    def target_position(self) -> np.ndarray:
        self._check_open()
        return np.array(self._client.getBasePositionAndOrientation(self._target)[0])

    def engine_joints(self) -> EngineJoints:
        self._check_open()
        infos = [self._client.getJointInfo(self._robot, index) for index in self._joints]
        return EngineJoints(
            names=tuple(info[1].decode() for info in infos),
            lower=np.array([info[8] for info in infos]),
            upper=np.array([info[9] for info in infos]),
            effort=np.array([info[10] for info in infos]),
            damping=np.array([info[6] for info in infos]),
        )

    def n_contacts(self) -> int:
        self._check_open()
        self._client.performCollisionDetection()
        points = self._client.getContactPoints(bodyA=self._robot)
        # Bullet also reports points within its contact threshold; count only touching ones.
        return sum(1 for point in points if point[2] != self._robot and point[8] <= 0.0)

    def _reset_engine(self) -> None:
        pass  # PyBullet keeps no integrator state beyond q, qd (set next)

    def _place_target(self, position: np.ndarray) -> None:
        self._client.resetBasePositionAndOrientation(self._target, position.tolist(),
                                                     [0.0, 0.0, 0.0, 1.0])
        if self._stand is not None:
            rod, foot = self._stand_bodies
            self._client.resetBasePositionAndOrientation(rod, position.tolist(),
                                                         [0.0, 0.0, 0.0, 1.0])
            self._client.resetBasePositionAndOrientation(foot, self._stand.foot_position(position),
                                                         [0.0, 0.0, 0.0, 1.0])

    def _set_state(self, q: np.ndarray, qd: np.ndarray) -> None:
        for index, position, velocity in zip(self._joints, q, qd, strict=True):
            self._client.resetJointState(self._robot, index, float(position), float(velocity))

    def _step(self, torque: np.ndarray, n_steps: int) -> None:
        client, robot, joints = self._client, self._robot, self._joints
        torque_list = torque.tolist()
        for _ in range(n_steps):
            states = client.getJointStates(robot, joints)
            q_dofs = [states[i][0] for i in self._dof_order]
            mass_dofs = np.array(client.calculateMassMatrix(robot, q_dofs))
            own_acceleration = np.empty(len(joints))
            own_acceleration[self._dof_order] = np.diag(np.linalg.inv(mass_dofs))
            command = np.array(self._drive_torque(torque_list, [s[1] for s in states],
                                                  own_acceleration.tolist()))
            if self.config.gravity_compensation:
                g_dofs = client.calculateInverseDynamics(robot, q_dofs, self._zeros, self._zeros)
                gravity = np.empty(len(joints))
                gravity[self._dof_order] = g_dofs
                command = command + gravity
            client.setJointMotorControlArray(robot, joints, pybullet.TORQUE_CONTROL,
                                             forces=command.tolist())
            client.stepSimulation()

    def _ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self._link_pose(self._ee_link)

    def _render(self, width: int, height: int) -> np.ndarray:
        if self._camera_link is None or self.config.camera_eye is not None:
            eye, look_at = self.config.fixed_camera()
            rotation = look_at_rotation(eye, look_at)
        else:
            eye, rotation = self._link_pose(self._camera_link)
        # Optical frame: +z forward, +y down, so the image's up is -y.
        view = self._client.computeViewMatrix(eye.tolist(), (eye + rotation[:, 2]).tolist(),
                                              (-rotation[:, 1]).tolist())
        projection = self._projection.get((width, height))
        if projection is None:
            projection = self._client.computeProjectionMatrixFOV(
                fov=self.config.camera_fovy_deg, aspect=width / height,
                nearVal=self.config.camera_near, farVal=self.config.camera_far)
            self._projection[(width, height)] = projection
        _, _, rgba, _, _ = self._client.getCameraImage(
            width, height, viewMatrix=view, projectionMatrix=projection,
            renderer=pybullet.ER_TINY_RENDERER, flags=pybullet.ER_NO_SEGMENTATION_MASK)
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def _close(self) -> None:
        self._client.disconnect()

    def _link_pose(self, link: int) -> tuple[np.ndarray, np.ndarray]:
        state = self._client.getLinkState(self._robot, link, computeForwardKinematics=True)
        rotation = np.array(self._client.getMatrixFromQuaternion(state[5])).reshape(3, 3)
        return np.array(state[4]), rotation


def _create_stand(client: BulletClient, task: TaskSpec,
                  stand: TargetStand) -> tuple[int, int]:
    """The target stand's rod (its body's frame at the ball's centre) and foot (on the table under
    the ball), visual-only bodies; returns (rod, foot)."""
    rod = client.createVisualShape(
        pybullet.GEOM_CYLINDER, radius=stand.rod_radius, length=stand.rod_length,
        rgbaColor=stand.rgba,
        visualFramePosition=[0.0, 0.0, -(task.target_radius + stand.rod_length / 2)])
    foot = client.createVisualShape(pybullet.GEOM_CYLINDER, radius=stand.foot_radius,
                                    length=stand.foot_thickness, rgbaColor=stand.rgba)
    return tuple(client.createMultiBody(baseMass=0.0, baseCollisionShapeIndex=-1,
                                        baseVisualShapeIndex=shape) for shape in (rod, foot))


def _create_task_object(client: BulletClient, task: TaskSpec) -> int:
    """A static multibody whose base frame is the reach target or the centre of the hole bottom."""
    if task.hole is None:
        visual = client.createVisualShape(pybullet.GEOM_SPHERE, radius=task.target_radius,
                                          rgbaColor=_TARGET_RGBA)
        return client.createMultiBody(baseMass=0.0, baseCollisionShapeIndex=-1,
                                      baseVisualShapeIndex=visual)
    boxes = task.hole.boxes()
    kwargs = {
        "shapeTypes": [pybullet.GEOM_BOX] * len(boxes),
        "halfExtents": [half.tolist() for _, half in boxes],
    }
    frames = [centre.tolist() for centre, _ in boxes]
    collision = client.createCollisionShapeArray(collisionFramePositions=frames, **kwargs)
    visual = client.createVisualShapeArray(visualFramePositions=frames, **kwargs)
    body = client.createMultiBody(baseMass=0.0, baseCollisionShapeIndex=collision,
                                  baseVisualShapeIndex=visual)
    client.changeVisualShape(body, -1, rgbaColor=_BLOCK_RGBA)
    return body
