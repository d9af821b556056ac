"""The layout of the state vector x_t.

The state of an arm with ``n_joints`` joints and ``n_points`` tracked end-effector points is the
concatenation, in this order::

    joint_positions  q      (n_joints,)   rad
    joint_velocities qd     (n_joints,)   rad/s
    ee_points        p - p* (3 n_points,) m, each point minus its target point
    ee_velocities    dp/dt  (3 n_points,) m/s

Storing points *relative to their targets* makes the end-effector cost independent of the
condition: the target enters through the state, so one cost object serves every condition.
The default robot (7 joints, 2 points) has dX = 26 and dU = 7 (one torque per joint).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MismatchError

_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class StateLayout:
    """Named slices of the state vector; see the module docstring for the order and units."""

    n_joints: int = 7
    """Number of actuated joints; also the action dimension dU (one torque per joint)."""
    n_points: int = 2
    """Number of end-effector points tracked in the state (each 3-D)."""

    def __post_init__(self) -> None:
        if self.n_joints < 1 or self.n_points < 0:
            raise ValueError(
                f"StateLayout: expected n_joints >= 1 and n_points >= 0, "
                f"found n_joints={self.n_joints}, n_points={self.n_points}"
            )

    @property
    def joint_positions(self) -> slice:
        """Slice of the joint positions q (rad)."""
        return slice(0, self.n_joints)

    @property
    def joint_velocities(self) -> slice:
        """Slice of the joint velocities qd (rad/s)."""
        return slice(self.n_joints, 2 * self.n_joints)

    @property
    def ee_points(self) -> slice:
        """Slice of the end-effector points minus their targets, 3 per point (m)."""
        start = 2 * self.n_joints
        return slice(start, start + 3 * self.n_points)

    @property
    def ee_velocities(self) -> slice:
        """Slice of the end-effector point velocities, 3 per point (m/s)."""
        start = 2 * self.n_joints + 3 * self.n_points
        return slice(start, start + 3 * self.n_points)

    @property
    def dim(self) -> int:
        """State dimension dX."""
        return 2 * self.n_joints + 6 * self.n_points

    @property
    def action_dim(self) -> int:
        """Action dimension dU (one torque per joint)."""
        return self.n_joints

    def names(self) -> list[str]:
        """Names of the state entries in order: q0.., qd0.., ee0_x.., ee0_vx.. (length dX)."""
        names = [f"q{i}" for i in range(self.n_joints)]
        names += [f"qd{i}" for i in range(self.n_joints)]
        names += [f"ee{p}_{a}" for p in range(self.n_points) for a in _AXES]
        names += [f"ee{p}_v{a}" for p in range(self.n_points) for a in _AXES]
        return names

    def check_names(self, names: list[str] | tuple[str, ...]) -> None:
        """Raise :class:`MismatchError` unless ``names`` equals :meth:`names`.

        Used to refuse controllers or checkpoints made for another state layout.
        """
        mine = self.names()
        if list(names) != mine:
            raise MismatchError(
                f"state layout mismatch: expected {len(mine)} entries "
                f"[{', '.join(mine[:3])}, ..., {mine[-1]}], found {len(names)} entries "
                f"[{', '.join(list(names)[:3])}{', ...' if len(names) > 3 else ''}]"
            )
