"""Arm kinematics and rigid-body dynamics from a URDF, with pinocchio.

No ROS and no simulator here: the state estimator node and the training loop use this to build the
state x = [q, qd, ee_points - targets, ee_velocities] from joint measurements, on the robot or in
simulation alike.

Conventions: q, qd, tau, qdd have shape (n,) and follow :attr:`ArmKinematics.joint_names` (the
actuated joints from base to end effector, the order of ``mbpl_sim.ArmDescription``). End-effector
points are given in the ``ee_link`` frame (P, 3) and returned in the world (= URDF root) frame.
Units: SI (m, rad, s, kg, N m).

An instance keeps a pinocchio ``Data`` work buffer, so it is not thread safe: give each thread its
own instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin


class KinematicsError(ValueError):
    """The URDF, the end-effector link or an input does not fit the arm model."""


@dataclass(frozen=True)
class IkResult:
    """Outcome of :meth:`ArmKinematics.inverse_points`.

    Attributes:
        q: joint positions (n,), within the URDF limits.
        max_error: largest distance between an ee point and its target, m.
        converged: ``max_error`` is below the requested tolerance.
        iterations: iterations used.
    """

    q: np.ndarray
    max_error: float
    converged: bool
    iterations: int


class ArmKinematics:
    """Forward kinematics, point Jacobians and dynamics of the serial chain ending at ``ee_link``.

    Args:
        urdf_path: URDF file of the arm; its root link is fixed at the world origin.
        ee_link: link whose frame carries the tracked points.
        ee_points_local: (P, 3) points in the ``ee_link`` frame, m.
        joint_names: optional expected joint order; by default the actuated joints on the chain,
            base to end effector. Movable joints off the chain are locked at zero.

    Raises:
        KinematicsError: unreadable URDF, unknown link, unsupported joint (continuous, floating),
            ``joint_names`` that do not name the chain's joints, bad ``ee_points_local`` shape.
    """

    def __init__(
        self,
        urdf_path: str | Path,
        ee_link: str,
        ee_points_local: np.ndarray,
        joint_names: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        path = Path(urdf_path)
        if not path.is_file():
            raise KinematicsError(f"URDF file not found: {path}")
        try:
            full = pin.buildModelFromUrdf(str(path))
        except (RuntimeError, ValueError) as err:
            raise KinematicsError(f"pinocchio cannot read {path}: {err}") from err
        if not full.existFrame(ee_link, pin.FrameType.BODY):
            links = [f.name for f in full.frames if f.type == pin.FrameType.BODY]
            raise KinematicsError(f"link {ee_link!r} not in {path.name}; available links: "
                                  f"{', '.join(links)}")
        chain = _chain_joint_ids(full, full.getFrameId(ee_link, pin.FrameType.BODY))
        off_chain = [j for j in range(1, full.njoints) if j not in chain]
        model = full
        if off_chain:
            model = pin.buildReducedModel(full, off_chain, pin.neutral(full))
        for j in range(1, model.njoints):
            if model.nqs[j] != 1 or model.nvs[j] != 1:
                raise KinematicsError(f"joint {model.names[j]!r} ({model.joints[j].shortname()}) "
                                      "is not a single revolute or prismatic degree of freedom")

        chain_names = [model.names[j] for j in range(1, model.njoints)]
        if joint_names is None:
            joint_names = chain_names
        if sorted(joint_names) != sorted(chain_names):
            raise KinematicsError(f"joint_names: expected a permutation of {chain_names}, "
                                  f"found {list(joint_names)}")
        self._model = model
        self._data = model.createData()
        self._frame_id = model.getFrameId(ee_link, pin.FrameType.BODY)
        # Position of each of our joints in pinocchio's q vector (nq == nv for these joints).
        self._idx = np.array([model.idx_qs[model.getJointId(name)] for name in joint_names])
        self.joint_names: tuple[str, ...] = tuple(joint_names)
        self.ee_link = ee_link
        self.urdf_path = path.resolve()
        points = np.asarray(ee_points_local, dtype=float)
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
            raise KinematicsError(f"ee_points_local: expected shape (P, 3), found {points.shape}")
        self.ee_points_local: np.ndarray = points.copy()
        self.lower: np.ndarray = model.lowerPositionLimit[self._idx].copy()
        self.upper: np.ndarray = model.upperPositionLimit[self._idx].copy()
        self.damping: np.ndarray = model.damping[self._idx].copy()
        """URDF ``<dynamics damping>`` per joint (n,), N m s/rad."""

    @property
    def n_joints(self) -> int:
        """Number of actuated joints n."""
        return len(self.joint_names)

    @property
    def n_points(self) -> int:
        """Number of tracked end-effector points P."""
        return self.ee_points_local.shape[0]

    # ----------------------------------------------------------------------------- kinematics

    def ee_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation matrix (3, 3) of the ``ee_link`` frame."""
        self._forward(q)
        placement = self._data.oMf[self._frame_id]
        return placement.translation.copy(), placement.rotation.copy()

    def ee_points(self, q: np.ndarray) -> np.ndarray:
        """World positions (P, 3) of the end-effector points at joint positions ``q`` (n,)."""
        position, rotation = self.ee_pose(q)
        return position + self.ee_points_local @ rotation.T

    def ee_jacobians(self, q: np.ndarray) -> np.ndarray:
        """Jacobians (P, 3, n) of the world positions of the ee points with respect to q."""
        pq = self._to_pin(q, "q")
        model, data = self._model, self._data
        pin.computeJointJacobians(model, data, pq)
        pin.updateFramePlacements(model, data)
        frame_jac = pin.getFrameJacobian(model, data, self._frame_id, pin.LOCAL_WORLD_ALIGNED)
        jac = frame_jac[:, self._idx]
        offsets = self.ee_points_local @ data.oMf[self._frame_id].rotation.T  # (P, 3) world
        # v_point = v_origin + w x r = v_origin - [r]x w
        return jac[None, :3, :] - np.einsum("pij,jk->pik", _skew(offsets), jac[3:, :])

    def screw_chain(self, home_q: np.ndarray | None = None) -> tuple:
        """Product-of-exponentials parameters of the chain and its first ee point, as
        :meth:`mbpl_ros.gps.networks.ChainKinematics.set_chain` takes them: screws (n, 6) (the
        columns of the world-frame joint Jacobian at ``home_q``, default zeros, linear part
        first) in chain order (base to tip), order (n,) (the index in q of each chain joint),
        home_q (n,) in chain order, the ``ee_link`` world pose (4, 4) at home_q and the first ee
        point in the link frame (3,)."""
        home_q = np.zeros(self.n_joints) if home_q is None else self._check(home_q, "home_q")
        model, data = self._model, self._data
        jacobian = pin.computeJointJacobians(model, data, self._to_pin(home_q, "home_q"))
        pin.updateFramePlacements(model, data)
        home = data.oMf[self._frame_id].homogeneous
        # A serial chain: pinocchio's joint ids run from the base to the tip.
        ours_of_q = {int(i): k for k, i in enumerate(self._idx)}
        order = [ours_of_q[int(model.idx_qs[j])] for j in range(1, model.njoints)]
        screws = np.stack([np.asarray(jacobian[:, model.idx_vs[j]])
                           for j in range(1, model.njoints)])
        return screws, order, home_q[order], home, self.ee_points_local[0].copy()

    def ee_points_and_velocities(
        self, q: np.ndarray, qd: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """World positions (P, 3) and linear velocities (P, 3) of the ee points, m and m/s."""
        model, data = self._model, self._data
        pin.forwardKinematics(model, data, self._to_pin(q, "q"), self._to_pin(qd, "qd"))
        placement = pin.updateFramePlacement(model, data, self._frame_id)
        twist = pin.getFrameVelocity(model, data, self._frame_id, pin.LOCAL_WORLD_ALIGNED)
        offsets = self.ee_points_local @ placement.rotation.T  # (P, 3) world
        # v_point = v_origin + w x r, without building the (P, 3, n) Jacobians (this runs for
        # every joint state the estimator receives).
        wx, wy, wz = twist.angular
        rx, ry, rz = offsets.T
        velocities = twist.linear + np.column_stack(
            (wy * rz - wz * ry, wz * rx - wx * rz, wx * ry - wy * rx))
        return placement.translation + offsets, velocities

    def inverse_points(
        self,
        targets: np.ndarray,
        q_seed: np.ndarray,
        tolerance: float = 1e-4,
        max_iterations: int = 300,
        damping: float = 1e-3,
        posture_gain: float = 0.2,
    ) -> IkResult:
        """Joint positions that put the ee points on ``targets`` (P, 3), by damped least squares.

        Each iteration takes Δq = J⁺ e + (I - J⁺ J) k (q_seed - q), with J the stacked point
        Jacobians (3P, n), e the stacked point errors, J⁺ = Jᵀ (J Jᵀ + λ² I)⁻¹ (λ = ``damping``)
        and k = ``posture_gain``: the redundancy is resolved towards the seed. q is clipped to the
        URDF limits. Stops once the error is below ``tolerance`` and the step below 1e-6 rad.
        With P = 2 points on the tool axis this fixes the tool position and its axis direction.
        """
        targets = np.asarray(targets, dtype=float)
        if targets.shape != self.ee_points_local.shape:
            raise KinematicsError(f"targets: expected shape {self.ee_points_local.shape}, "
                                  f"found {targets.shape}")
        q_ref = np.clip(self._check(q_seed, "q_seed"), self.lower, self.upper)
        q = q_ref.copy()
        eye_n = np.eye(self.n_joints)
        eye_m = np.eye(3 * self.n_points)
        iterations = 0
        while iterations < max_iterations:
            iterations += 1
            error = (targets - self.ee_points(q)).reshape(-1)
            jac = self.ee_jacobians(q).reshape(-1, self.n_joints)
            pinv = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * eye_m, eye_m)
            step = pinv @ error + (eye_n - pinv @ jac) @ (posture_gain * (q_ref - q))
            q_new = np.clip(q + step, self.lower, self.upper)
            moved = float(np.abs(q_new - q).max())
            q = q_new
            if moved < 1e-6 and np.abs(error).max() < tolerance:
                break
        max_error = float(np.linalg.norm(targets - self.ee_points(q), axis=1).max())
        return IkResult(q, max_error, max_error < tolerance, iterations)

    # ------------------------------------------------------------------------------- dynamics

    def gravity(self, q: np.ndarray) -> np.ndarray:
        """Generalized gravity torques g(q) (n,), N m: the torques that hold the arm still."""
        tau = pin.computeGeneralizedGravity(self._model, self._data, self._to_pin(q, "q"))
        return tau[self._idx].copy()

    def mass_matrix(self, q: np.ndarray) -> np.ndarray:
        """Joint-space inertia matrix M(q) (n, n), symmetric positive definite."""
        mass = pin.crba(self._model, self._data, self._to_pin(q, "q"))
        mass = np.triu(mass) + np.triu(mass, 1).T
        return mass[np.ix_(self._idx, self._idx)].copy()

    def forward_dynamics(
        self,
        q: np.ndarray,
        qd: np.ndarray,
        tau: np.ndarray,
        damping: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Joint accelerations qdd (n,) of M qdd + C qd + g = tau - D qd (articulated bodies).

        Args:
            q, qd, tau: joint positions, velocities and torques (n,).
            damping: viscous damping D per joint (n,) or scalar. ``None`` uses the URDF damping
                (:attr:`damping`); pass 0.0 when ``tau`` already contains the damping torque.
        """
        qd = self._check(qd, "qd")
        tau = self._check(tau, "tau")
        damp = self.damping if damping is None else np.broadcast_to(damping, qd.shape)
        qdd = pin.aba(self._model, self._data, self._to_pin(q, "q"),
                      self._to_pin(qd, "qd"), self._to_pin(tau - damp * qd, "tau"))
        return qdd[self._idx].copy()

    # -------------------------------------------------------------------------------- helpers

    def _check(self, value: np.ndarray, name: str) -> np.ndarray:
        arr = np.asarray(value, dtype=float)
        if arr.shape != (self.n_joints,):
            raise KinematicsError(f"{name}: expected shape ({self.n_joints},), found {arr.shape}")
        return arr

    def _to_pin(self, value: np.ndarray, name: str) -> np.ndarray:
        out = np.empty(self._model.nq)
        out[self._idx] = self._check(value, name)
        return out

    def _forward(self, q: np.ndarray) -> None:
        pin.framesForwardKinematics(self._model, self._data, self._to_pin(q, "q"))


def _chain_joint_ids(model: pin.Model, frame_id: int) -> list[int]:
    """Pinocchio joint ids from the root to the parent joint of a frame (universe excluded)."""
    ids = []
    joint = model.frames[frame_id].parentJoint
    while joint != 0:
        ids.append(joint)
        joint = model.parents[joint]
    return ids[::-1]


def _skew(vectors: np.ndarray) -> np.ndarray:
    """Cross-product matrices (P, 3, 3) of vectors (P, 3): skew(r) @ w == r x w."""
    x, y, z = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    zero = np.zeros_like(x)
    return np.stack(
        [np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)],
        axis=1,
    )
