"""The simulator interface shared by the MuJoCo and PyBullet backends.

Step order (one call of :meth:`ArmSim.step`): the commanded torque is checked, clamped to the URDF
effort limits and held constant for ``n_steps`` physics steps of ``timestep`` seconds; in each
physics step the engine adds gravity compensation (when enabled) and the URDF joint damping
``-D qd``, then integrates with semi-implicit Euler (velocities first, positions with the new
velocities). Both backends integrate damping explicitly, so one step's velocity change equals
``timestep`` times the continuous-time acceleration of the rigid-body model.

Drives: each joint's drive has a linear torque-speed curve whose no-load speed is the URDF velocity
limit v: it delivers a commanded torque tau only within [-e (1 + qd/v), e (1 - qd/v)] (e: the URDF
effort limit). That is full effort at rest, none in the direction of motion at v, and braking
beyond v (back-EMF above the supply voltage). Without the curve nothing limited velocities:
training trials drove joints at 18-92 rad/s against the URDF's 2.0-2.6 rad/s, and controllers
learned to use speeds no arm has.

The curve's slope e/v acts like a damper, and a stiff one: on the light wrist joints its time
constant I v / e is about 0.2 ms, shorter than the 1 ms physics step, so bounding the torque by the
velocity at the start of the step would overshoot and oscillate. The bound is therefore taken at
the velocity the joint reaches at the *end* of the step under its own drive torque,
qd + h a tau with a = (M^-1)_ii (joint i's acceleration per unit of its own torque, the other
joints free). Solved for tau, with beta = h a e / v:

    -e (1 + qd/v) / (1 + beta)  <=  tau  <=  e (1 - qd/v) / (1 + beta)

(backward Euler for the drive's damping, as MuJoCo's implicit integrator treats actuator damping).
A joint driven at full effort approaches e / (e/v + (1 + beta) D) < v, not passing v under its own
drive (D: the URDF damping, still explicit).

Gravity compensation (default on) mimics the torque interfaces of the Franka and KUKA arms: the
commanded torque acts on top of the robot's own gravity compensation g(q), which is not clamped.

Collisions: the arm collides with the table and the task objects, not with itself (as in PyBullet's
default for URDF models; a real arm's controller guards self-collision).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mbpl_sim.description import ArmDescription, check_vector
from mbpl_sim.errors import SimError
from mbpl_sim.tasks import Condition, TargetStand, TaskSpec

DEFAULT_CAMERA_EYE = np.array([1.35, 0.55, 0.8])
"""World position (3,) of the camera when the URDF has no camera frame, m."""
DEFAULT_CAMERA_LOOK_AT = np.array([0.4, 0.0, 0.25])
"""World point (3,) that the fallback camera looks at, m."""


@dataclass(frozen=True)
class SimConfig:
    """Settings shared by both backends.

    Attributes:
        timestep: physics step, s.
        gravity_compensation: add g(q) to every commanded torque (see module docstring).
        camera_frame: URDF link the image is rendered from, REP 103 optical convention (+z along
            the optical axis, +x right, +y down). If the URDF has no such link, a fixed camera at
            :data:`DEFAULT_CAMERA_EYE` looking at :data:`DEFAULT_CAMERA_LOOK_AT` is used.
        camera_fovy_deg: vertical field of view, degrees.
        camera_near, camera_far: clipping distances, m.
        camera_supersample: render k times wider and higher and average k x k blocks. Small
            images need it: the reach target (2 cm sphere) covers about one pixel of a 32x32
            image and PyBullet's TinyRenderer, which has no anti-aliasing, drops it or not
            depending on where it falls; averaged, it is a faint blob that moves smoothly.
        camera_eye, camera_look_at: a fixed world camera at ``camera_eye`` (3,) looking at
            ``camera_look_at`` (3,) (default :data:`DEFAULT_CAMERA_LOOK_AT`), used instead of
            ``camera_frame`` when given (None: the URDF's camera frame or the fallback).
        table: add a table top (a plane at z = 0) that the arm and the task objects rest on.
        contact_friction: Coulomb friction coefficient of every contact (0.5: dry metal on
            metal). Set per engine so that the *combined* coefficient is this in both: MuJoCo
            takes the larger of two geoms' values, Bullet their product; left at the engines'
            defaults they differed fourfold (MuJoCo 1.0, PyBullet 0.5 x 0.5 = 0.25).
    """

    timestep: float = 0.001
    gravity_compensation: bool = True
    camera_frame: str = "camera_optical_frame"
    camera_fovy_deg: float = 55.0
    camera_near: float = 0.05
    camera_far: float = 5.0
    camera_supersample: int = 1
    camera_eye: tuple[float, float, float] | None = None
    camera_look_at: tuple[float, float, float] | None = None
    table: bool = True
    contact_friction: float = 0.5

    def __post_init__(self) -> None:
        if not self.contact_friction >= 0:
            raise ValueError(f"contact_friction: expected >= 0, found {self.contact_friction}")
        if not 0 < self.timestep <= 0.01:
            raise ValueError(f"timestep: expected 0 < timestep <= 0.01 s, found {self.timestep}")
        if not 0 < self.camera_fovy_deg < 180:
            raise ValueError(f"camera_fovy_deg: expected (0, 180), found {self.camera_fovy_deg}")
        if not 0 < self.camera_near < self.camera_far:
            raise ValueError("camera clipping: expected 0 < near < far, found "
                             f"{self.camera_near}, {self.camera_far}")
        for name in ("camera_eye", "camera_look_at"):
            value = getattr(self, name)
            if value is not None and (np.shape(value) != (3,)
                                      or not np.all(np.isfinite(value))):
                raise ValueError(f"{name}: expected 3 finite coordinates, found {value!r}")
        if self.camera_look_at is not None and self.camera_eye is None:
            raise ValueError("camera_look_at: needs camera_eye")
        if self.camera_eye is not None and np.allclose(self.camera_eye, self.fixed_camera()[1]):
            raise ValueError("camera_eye: expected a point other than camera_look_at")
        if int(self.camera_supersample) != self.camera_supersample or \
                not 1 <= self.camera_supersample <= 8:
            raise ValueError(f"camera_supersample: expected an integer in [1, 8], found "
                             f"{self.camera_supersample}")

    def fixed_camera(self) -> tuple[np.ndarray, np.ndarray]:
        """(eye, look_at) of the world-fixed camera: ``camera_eye``/``camera_look_at`` when
        given, else the fallback :data:`DEFAULT_CAMERA_EYE`/:data:`DEFAULT_CAMERA_LOOK_AT`."""
        eye = DEFAULT_CAMERA_EYE if self.camera_eye is None else self.camera_eye
        look = DEFAULT_CAMERA_LOOK_AT if self.camera_look_at is None else self.camera_look_at
        return np.array(eye, dtype=float), np.array(look, dtype=float)


@dataclass(frozen=True)
class EngineJoints:
    """The actuated joints as the engine has loaded them, in ArmDescription order.

    Attributes:
        names: joint names (n,).
        lower, upper: position limits (n,), rad or m.
        effort: torque limits (n,), N m or N (MuJoCo: actuator ctrlrange; PyBullet: max force).
        damping: viscous joint damping (n,), N m s/rad.
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    effort: np.ndarray
    damping: np.ndarray


def scene_stand(task: TaskSpec, config: SimConfig) -> TargetStand | None:
    """The target stand the scene draws: the task's, when there is a table for it to stand on."""
    return task.stand if config.table else None


def look_at_rotation(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) of an optical frame at ``eye`` looking at ``target`` (+z forward, +y down,
    +x right; the image's up is the world's +z as far as possible)."""
    forward = np.asarray(target, dtype=float) - np.asarray(eye, dtype=float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.column_stack([right, down, forward])


class ArmSim(ABC):
    """A simulated torque-controlled serial arm with a task scene and a camera.

    Joint vectors have shape (n,) in ``description.joint_names`` order; units SI (rad, rad/s,
    N m, m, s). The simulator starts at the zero configuration (clipped to the limits) with the
    task objects at the centre of the task's target box until :meth:`reset` is called.

    Not thread safe: call every method from one thread (MuJoCo's GL context belongs to the thread
    that first renders).
    """

    def __init__(self, description: ArmDescription, task: TaskSpec, config: SimConfig) -> None:
        self.description = description
        self.task = task
        self.config = config
        self._condition: Condition | None = None
        self._effort_list: list[float] = description.effort_limits.tolist()
        self._speed_list: list[float] = description.velocity_limits.tolist()
        self._steps = 0
        self._closed = False

    # ----------------------------------------------------------------------- public interface

    @property
    def timestep(self) -> float:
        """Physics step, s."""
        return self.config.timestep

    @property
    def sim_time(self) -> float:
        """Simulated time since the last :meth:`reset`, s."""
        return self._steps * self.config.timestep

    @property
    def condition(self) -> Condition | None:
        """The condition of the last :meth:`reset`, or ``None`` before the first one."""
        return self._condition

    def reset(self, condition: Condition) -> None:
        """Put the arm at ``condition.joint_positions`` at rest, place the target (reach) or the
        block with its hole bottom (peg) at ``condition.target_position``, and zero ``sim_time``.

        Raises:
            ValueError: the configuration has the wrong size or lies outside the joint limits.
        """
        self._check_open()
        q = self.description.check_positions(condition.joint_positions, "condition joint positions")
        self._reset_engine()
        self._place_target(np.asarray(condition.target_position, dtype=float))
        self._set_state(q, np.zeros_like(q))
        self._condition = condition
        self._steps = 0

    def set_state(self, q: np.ndarray, qd: np.ndarray) -> None:
        """Overwrite joint positions and velocities (n,) without touching time or the task objects.

        Raises:
            ValueError: wrong size or non-finite values (the state is then unchanged).
        """
        self._check_open()
        n = self.description.n_joints
        q = check_vector(q, n, "joint positions")
        qd = check_vector(qd, n, "joint velocities")
        self._set_state(q, qd)

    def step(self, torque: np.ndarray, n_steps: int = 1) -> np.ndarray:
        """Apply ``torque`` (n,), N m, for ``n_steps`` physics steps and return the torque applied.

        The torque is clamped to ±effort limits and held constant over the steps; in every
        physics step the drives deliver it within their torque-speed curve (see the module
        docstring), and gravity compensation (if enabled) is added on top. The returned torque is
        the clamped command, before the torque-speed curve.

        Raises:
            ValueError: wrong size, non-finite torque or ``n_steps`` < 1; the state is unchanged.
        """
        self._check_open()
        n = self.description.n_joints
        torque = np.asarray(torque, dtype=float)
        if torque.shape != (n,) or not np.isfinite(torque).all():
            check_vector(torque, n, "torque")  # raises with the reason
        if int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"n_steps: expected an integer >= 1, found {n_steps}")
        limit = self.description.effort_limits
        applied = np.minimum(np.maximum(torque, -limit), limit)  # a new array
        self._step(applied, int(n_steps))
        self._steps += int(n_steps)
        return applied

    def ee_points_world(self) -> np.ndarray:
        """World positions (P, 3) of the task's ee points, from the engine's own kinematics, m."""
        self._check_open()
        position, rotation = self._ee_pose()
        return position + self.task.ee_points_local @ rotation.T

    def render(self, width: int = 64, height: int = 64) -> np.ndarray:
        """An RGB image (height, width, 3) uint8 from the camera frame (rendered
        ``camera_supersample`` times larger and block-averaged down when that is > 1).

        Raises:
            ValueError: width or height not a positive integer up to 1024 / camera_supersample.
        """
        self._check_open()
        k = int(self.config.camera_supersample)
        for name, value in (("width", width), ("height", height)):
            if int(value) != value or not 1 <= value * k <= 1024:
                raise ValueError(f"{name}: expected an integer in [1, {1024 // k}], found "
                                 f"{value}")
        width, height = int(width), int(height)
        image = self._render(width * k, height * k)
        if k > 1:
            blocks = image.reshape(height, k, width, k, 3).astype(np.uint16).sum(axis=(1, 3))
            image = ((blocks + k * k // 2) // (k * k)).astype(np.uint8)
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise SimError(f"renderer returned {image.shape} {image.dtype}, expected "
                           f"({height}, {width}, 3) uint8")
        return image

    def close(self) -> None:
        """Release the engine; later calls raise :class:`SimError`. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> ArmSim:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abstractmethod
    def joint_positions(self) -> np.ndarray:
        """Joint positions q (n,), rad or m."""

    @abstractmethod
    def joint_velocities(self) -> np.ndarray:
        """Joint velocities qd (n,), rad/s or m/s."""

    @abstractmethod
    def target_position(self) -> np.ndarray:
        """World position (3,) of the task object as the engine has it: the reach target's centre
        or the centre of the hole bottom, m."""

    @abstractmethod
    def engine_joints(self) -> EngineJoints:
        """Names, limits and damping of the actuated joints read back from the engine's model."""

    @abstractmethod
    def n_contacts(self) -> int:
        """Number of contact points between the arm and anything else at the current state."""

    # ------------------------------------------------------------------ backend hooks (private)

    @abstractmethod
    def _reset_engine(self) -> None:
        """Clear engine state (time, warm starts, contacts) before a reset."""

    @abstractmethod
    def _place_target(self, position: np.ndarray) -> None:
        """Move the task object so that its reference point is at ``position`` (3,)."""

    @abstractmethod
    def _set_state(self, q: np.ndarray, qd: np.ndarray) -> None:
        """Write validated q, qd (n,) into the engine and update its kinematics."""

    @abstractmethod
    def _step(self, torque: np.ndarray, n_steps: int) -> None:
        """Advance ``n_steps`` physics steps with the validated, clamped ``torque`` (n,), passed
        through :meth:`_drive_torque` at the start of every physics step."""

    @abstractmethod
    def _ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation (3, 3) of the ee link frame."""

    @abstractmethod
    def _render(self, width: int, height: int) -> np.ndarray:
        """RGB uint8 image (height, width, 3)."""

    @abstractmethod
    def _close(self) -> None:
        """Free engine resources."""

    def _drive_torque(self, command: Sequence[float], qd: Sequence[float],
                      own_acceleration: Sequence[float]) -> list[float]:
        """The torque (n,) the drives deliver for the clamped ``command`` (n,) at joint velocities
        ``qd`` (n,): ``command`` bounded by the torque-speed curve at the end of the physics step
        (module docstring). ``own_acceleration`` (n,): the diagonal of M^-1, rad/s^2 per N m."""
        # Once per physics step: on Python floats, where each numpy call on 7 entries costs ~1 µs
        # (docs/experiments/drive_curve_cost.py: 3-5 against 5-8 µs, next to a 6-7 µs mj_step).
        h = self.config.timestep
        delivered = []
        for tau, v, a, e, vmax in zip(command, qd, own_acceleration, self._effort_list,
                                      self._speed_list, strict=True):
            gain = 1.0 + h * a * e / vmax
            upper = e * (1.0 - v / vmax) / gain
            lower = -e * (1.0 + v / vmax) / gain
            delivered.append(min(max(tau, lower), upper))
        return delivered

    def _check_open(self) -> None:
        if self._closed:
            raise SimError(f"{type(self).__name__} is closed")
