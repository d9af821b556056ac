"""The learning state x_t of an arm, built from joint readings with the URDF's kinematics.

x = [q, qd, ee points - their targets, ee point velocities] in :class:`StateLayout` order. The
same builder serves the direct training loop and the state_estimator node, so both see the same x.
"""

from __future__ import annotations

import numpy as np

from mbpl_ros.core.state import StateLayout
from mbpl_ros.kinematics import ArmKinematics


class ArmStateBuilder:
    """Builds x_t (dX,) from joint positions and velocities (n,) and target points (P, 3)."""

    def __init__(self, kinematics: ArmKinematics) -> None:
        self.kinematics = kinematics
        self.layout = StateLayout(kinematics.n_joints, kinematics.n_points)

    def state(self, q: np.ndarray, qd: np.ndarray, target_points: np.ndarray) -> np.ndarray:
        """The state vector (dX,); raises ValueError on wrong sizes or non-finite input."""
        q = np.asarray(q, dtype=float)
        qd = np.asarray(qd, dtype=float)
        targets = np.asarray(target_points, dtype=float)
        n, P = self.layout.n_joints, self.layout.n_points
        if q.shape != (n,) or qd.shape != (n,):
            raise ValueError(f"joint state: expected q and qd of shape ({n},), found "
                             f"{q.shape} and {qd.shape}")
        if targets.shape != (P, 3):
            raise ValueError(f"target points: expected shape ({P}, 3), found {targets.shape}")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))
                and np.all(np.isfinite(targets))):
            raise ValueError("joint state or targets: non-finite value")
        points, velocities = self.kinematics.ee_points_and_velocities(q, qd)
        x = np.empty(self.layout.dim)
        x[self.layout.joint_positions] = q
        x[self.layout.joint_velocities] = qd
        x[self.layout.ee_points] = (points - targets).ravel()
        x[self.layout.ee_velocities] = velocities.ravel()
        return x
