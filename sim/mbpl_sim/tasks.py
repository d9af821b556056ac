"""Tasks (reach, peg insertion), their conditions and success measure, independent of the engine.

Geometry is given in the world frame (z up, the arm's root link at the origin, the table top at
z = 0). Both tasks track the same end-effector points: by default the origin of the ee link and a
point 0.1 m back along its -z axis; with ``ee_link="peg_tip"`` on ``arm7.urdf`` these are the peg
tip and a point on the peg axis. At the goal the ee z axis points straight down, so the second
target point lies 0.1 m above the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mbpl_ros.kinematics import ArmKinematics
from mbpl_sim.description import ArmDescription
from mbpl_sim.errors import TaskError

TASK_NAMES = ("reach", "peg")

DEFAULT_EE_POINTS_LOCAL = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -0.1]])
"""(P=2, 3) tracked points in the ee frame, m: the ee origin and a point 0.1 m back along -z."""

TOOL_DOWN = np.diag([1.0, -1.0, -1.0])
"""Goal orientation of the ee frame in the world: z axis pointing down (180 deg about x)."""


@dataclass(frozen=True)
class Condition:
    """One initial condition of a task.

    Attributes:
        joint_positions: initial joint positions q0 (n,), rad, in ArmDescription order.
        target_position: world position (3,), m. Reach: the target point. Peg: the centre of the
            bottom of the hole.
    """

    joint_positions: np.ndarray
    target_position: np.ndarray
    target_points: np.ndarray | None = None
    """Optional (P, 3) goal of every ee point, m; None: derived from ``target_position`` with
    the tool pointing down (:meth:`TaskSpec.target_points`). Set for arms that cannot orient
    their tool freely, from the forward kinematics of a goal configuration."""

    def __post_init__(self) -> None:
        q = np.asarray(self.joint_positions, dtype=float)
        target = np.asarray(self.target_position, dtype=float)
        if self.target_points is not None:
            points = np.asarray(self.target_points, dtype=float)
            if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
                raise TaskError(f"target_points: expected finite (P, 3), found {points.shape}")
            object.__setattr__(self, "target_points", points.copy())
        if q.ndim != 1 or not np.all(np.isfinite(q)):
            raise TaskError(f"joint_positions: expected a finite vector (n,), found {q}")
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise TaskError(f"target_position: expected a finite vector (3,), found {target}")
        object.__setattr__(self, "joint_positions", q.copy())
        object.__setattr__(self, "target_position", target.copy())


@dataclass(frozen=True)
class HoleGeometry:
    """A block with a vertical blind square hole, built from five boxes (floor and four walls).

    All lengths in m. The block stands on the table; its origin is the centre of the hole bottom.

    Attributes:
        peg_radius: radius of the peg the hole is made for.
        clearance: gap between the peg and each wall when the peg is centred.
        depth: from the hole bottom to the block top.
        floor_thickness: material under the hole bottom (so the bottom is at table + this).
        wall_thickness: thickness of each wall around the hole.
    """

    peg_radius: float = 0.012
    clearance: float = 0.006
    depth: float = 0.08
    floor_thickness: float = 0.02
    wall_thickness: float = 0.04

    @property
    def hole_half_width(self) -> float:
        """Half the side of the square hole, m."""
        return self.peg_radius + self.clearance

    @property
    def outer_half_width(self) -> float:
        """Half the side of the block, m."""
        return self.hole_half_width + self.wall_thickness

    def boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The block's boxes: (centre (3,), half sizes (3,)) relative to the hole-bottom centre."""
        h, o, t = self.hole_half_width, self.outer_half_width, self.wall_thickness
        floor = (np.array([0.0, 0.0, -self.floor_thickness / 2]),
                 np.array([o, o, self.floor_thickness / 2]))
        zc, zh = self.depth / 2, self.depth / 2
        c = h + t / 2
        walls = [
            (np.array([c, 0.0, zc]), np.array([t / 2, o, zh])),  # +x wall, full width
            (np.array([-c, 0.0, zc]), np.array([t / 2, o, zh])),  # -x wall, full width
            (np.array([0.0, c, zc]), np.array([h, t / 2, zh])),  # +y wall, between x walls
            (np.array([0.0, -c, zc]), np.array([h, t / 2, zh])),  # -y wall
        ]
        return [floor, *walls]


@dataclass(frozen=True)
class TargetStand:
    """The reach target's stand (visual only, drawn when the scene has a table): a thin rod from
    the ball straight down through the table and a flat foot on the table under the ball.

    Why: from one camera a ball's position along the line of sight shows only in its apparent
    size, a pixel or two at 32x32. When the tool covers part of the ball that size shrinks, and a
    visuomotor network read the ball 3-10 cm farther along the line of sight at the end of reach
    trials (2026-11-30). The foot's place on the table plane and the ball's height above it fix
    the ball's position with the tool in front of it, as a marker on a stand does in a lab.
    """

    rod_radius: float = 0.006
    rod_length: float = 0.4
    """Longer than the reach box is high; the table hides the rest. (A target higher than this,
    e.g. another arm's goal from its forward kinematics, shows the rod's end in the air. A 1 m
    rod changed some pixels of the rendered images by up to 13 (MuJoCo) and 23 (PyBullet) of 255,
    so the measured runs' 0.4 stays.)"""
    foot_radius: float = 0.03
    foot_thickness: float = 0.004
    rgba: tuple[float, float, float, float] = (0.15, 0.15, 0.15, 1.0)

    def foot_position(self, target: np.ndarray) -> list[float]:
        """World position (3,) of the foot's centre for a target at ``target``: under it, resting
        on the table top (z = 0)."""
        return [float(target[0]), float(target[1]), self.foot_thickness / 2]


@dataclass(frozen=True)
class TaskSpec:
    """What a task places in the world, what the cost tracks, and when a trial succeeds.

    Attributes:
        name: ``"reach"`` or ``"peg"``.
        ee_points_local: (P, 3) points in the ee frame that the cost tracks, m.
        target_low, target_high: (3,) box from which target positions are drawn, m.
        success_tolerance: largest distance of the first ee point to the target for success, m.
        target_radius: radius of the (visual only) reach target sphere, m.
        hole: block geometry for the peg task, ``None`` for reach.
        init_clearance: an initial configuration keeps every ee point at least this far above
            the target and the first point at least this far from it, m.
        ready_height: world z of the ee origin in the home pose (:func:`ready_configuration`), m.
        stand: the reach target's stand (None: the ball floats).
    """

    name: str
    ee_points_local: np.ndarray = field(default_factory=lambda: DEFAULT_EE_POINTS_LOCAL.copy())
    target_low: np.ndarray = field(default_factory=lambda: np.array([0.35, -0.25, 0.05]))
    target_high: np.ndarray = field(default_factory=lambda: np.array([0.6, 0.25, 0.3]))
    success_tolerance: float = 0.03
    target_radius: float = 0.02
    hole: HoleGeometry | None = None
    init_clearance: float = 0.15
    ready_height: float = 0.45
    stand: TargetStand | None = None

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES:
            raise TaskError(f"task name: expected one of {TASK_NAMES}, found {self.name!r}")
        points = np.asarray(self.ee_points_local, dtype=float)
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
            raise TaskError(f"ee_points_local: expected shape (P, 3), found {points.shape}")
        object.__setattr__(self, "ee_points_local", points.copy())
        if (self.name == "peg") != (self.hole is not None):
            raise TaskError(f"task {self.name!r}: expected a hole geometry for 'peg' and only "
                            f"for it, found hole={self.hole}")
        if self.stand is not None and self.hole is not None:
            raise TaskError("a target stand is for the reach target; the peg task has a block")

    @classmethod
    def reach(cls, **overrides) -> TaskSpec:
        """Reach a point in the air above the table with the tool pointing down (a ball on a
        stand marks it)."""
        return cls(name="reach", **{"stand": TargetStand(), **overrides})

    @classmethod
    def peg(cls, hole: HoleGeometry | None = None, **overrides) -> TaskSpec:
        """Insert the peg into a hole of a block standing on the table at x 0.45-0.6, y -0.2-0.2."""
        hole = hole or HoleGeometry()
        z = hole.floor_thickness
        defaults = {
            "target_low": np.array([0.45, -0.2, z]),
            "target_high": np.array([0.6, 0.2, z]),
            "success_tolerance": 0.02,
            "ready_height": 0.35,
        }
        defaults.update(overrides)
        return cls(name="peg", hole=hole, **defaults)

    @property
    def n_points(self) -> int:
        """Number of tracked points P."""
        return self.ee_points_local.shape[0]

    def target_points(self, condition: Condition) -> np.ndarray:
        """World positions (P, 3) where the ee points should end: the condition's explicit
        ``target_points`` if set, else the ee frame at the target with its z axis down (peg: tip at
        the hole bottom, the second point straight above it)."""
        if condition.target_points is not None:
            if condition.target_points.shape != self.ee_points_local.shape:
                raise TaskError(f"condition target_points: expected shape "
                                f"{self.ee_points_local.shape}, found "
                                f"{condition.target_points.shape}")
            return condition.target_points.copy()
        return condition.target_position + self.ee_points_local @ TOOL_DOWN.T

    def distance(self, ee_points_world: np.ndarray, condition: Condition) -> float:
        """Distance (m) of the first ee point (peg tip) to the target (peg: the hole bottom)."""
        points = np.asarray(ee_points_world, dtype=float)
        if points.shape != self.ee_points_local.shape:
            raise TaskError(f"ee_points_world: expected shape {self.ee_points_local.shape}, "
                            f"found {points.shape}")
        return float(np.linalg.norm(points[0] - condition.target_position))

    def success(self, ee_points_world: np.ndarray, condition: Condition) -> bool:
        """Whether :meth:`distance` is within ``success_tolerance``."""
        return self.distance(ee_points_world, condition) <= self.success_tolerance


def make_task(name: str, **overrides) -> TaskSpec:
    """The task called ``name`` (one of :data:`TASK_NAMES`) with default geometry."""
    if name == "reach":
        return TaskSpec.reach(**overrides)
    if name == "peg":
        return TaskSpec.peg(**overrides)
    raise TaskError(f"unknown task {name!r}; expected one of {TASK_NAMES}")


def task_kinematics(task: TaskSpec, arm: ArmDescription) -> ArmKinematics:
    """Pinocchio kinematics of ``arm`` tracking the task's ee points, in the arm's joint order."""
    return ArmKinematics(arm.urdf_path, arm.ee_link, task.ee_points_local, arm.joint_names)


def ready_configuration(task: TaskSpec, arm: ArmDescription) -> np.ndarray:
    """A home configuration (n,): the ee origin at ``ready_height`` above the centre of the target
    box with the tool pointing down, redundancy resolved towards the middle of the joint ranges.

    Raises:
        TaskError: the arm cannot reach the ready pose.
    """
    kin = task_kinematics(task, arm)
    centre = (task.target_low + task.target_high) / 2
    centre[2] = task.ready_height
    seed = (arm.lower + arm.upper) / 2
    result = kin.inverse_points(task.target_points(Condition(seed, centre)), seed,
                                tolerance=1e-3, max_iterations=500)
    if not result.converged:
        raise TaskError(f"the arm cannot reach the ready pose {centre} with the tool down "
                        f"(IK error {result.max_error:.3f} m)")
    return result.q


def goal_configuration(
    task: TaskSpec, arm: ArmDescription, condition: Condition, q_seed: np.ndarray | None = None,
    depth_offset: float = 0.0,
) -> np.ndarray:
    """Joint positions (n,) that put the ee points on the condition's target points.

    Args:
        depth_offset: shift of the goal along world z, m (e.g. 0.1 puts the peg tip 0.1 m above
            the hole bottom).
        q_seed: IK start; default the condition's initial configuration.

    Raises:
        TaskError: the goal is out of reach (IK does not converge to 1 mm).
    """
    kin = task_kinematics(task, arm)
    seed = condition.joint_positions if q_seed is None else np.asarray(q_seed, dtype=float)
    targets = task.target_points(condition) + np.array([0.0, 0.0, depth_offset])
    result = kin.inverse_points(targets, seed, tolerance=1e-3, max_iterations=500)
    if not result.converged:
        raise TaskError(f"target {condition.target_position} + dz {depth_offset} out of reach: "
                        f"IK error {result.max_error:.4f} m")
    return result.q


def _valid_condition(task: TaskSpec, kin: ArmKinematics, home: np.ndarray,
                     condition: Condition) -> bool:
    """Whether every ee point starts ``init_clearance`` above the target, the first at least
    that far from it, and the goal pose is reachable (IK from ``home`` to 1 mm)."""
    target = condition.target_position
    points = kin.ee_points(condition.joint_positions)
    if not (np.all(points[:, 2] >= target[2] + task.init_clearance)
            and np.linalg.norm(points[0] - target) >= task.init_clearance):
        return False
    return kin.inverse_points(task.target_points(condition), home, tolerance=1e-3,
                              max_iterations=300).converged


def make_conditions(
    task: TaskSpec,
    arm: ArmDescription,
    n: int,
    rng: np.random.Generator,
    home: np.ndarray | None = None,
    joint_spread: float = 0.2,
    max_tries: int = 100,
) -> list[Condition]:
    """Draw ``n`` reproducible conditions: reachable targets and initial poses near ``home``.

    Targets are drawn uniformly in [target_low, target_high] and kept only if the goal pose (ee
    points on :meth:`TaskSpec.target_points`) is reachable within the joint limits (IK to 1 mm).
    Initial configurations are ``home`` plus uniform noise of ±``joint_spread`` rad per joint,
    clipped to the limits, kept only if every ee point stays ``init_clearance`` above the target
    and the first ee point is at least ``init_clearance`` from it. Only ``rng`` draws randomness,
    so one seed gives one list.

    Args:
        home: central initial configuration (n,); default :func:`ready_configuration`.

    Raises:
        TaskError: ``n`` < 1, or no valid condition found within ``max_tries`` draws.
    """
    if n < 1:
        raise TaskError(f"n: expected at least 1 condition, found {n}")
    kin = task_kinematics(task, arm)
    home = ready_configuration(task, arm) if home is None else arm.check_positions(home, "home")
    conditions = []
    for index in range(n):
        for _ in range(max_tries):
            target = rng.uniform(task.target_low, task.target_high)
            q0 = np.clip(home + rng.uniform(-joint_spread, joint_spread, arm.n_joints),
                         arm.lower, arm.upper)
            condition = Condition(q0, target)
            if _valid_condition(task, kin, home, condition):
                conditions.append(condition)
                break
        else:
            raise TaskError(f"condition {index}: no reachable target / clear initial pose found "
                            f"in {max_tries} draws; check target_low/high for this arm")
    return conditions


def simplex_lattice(m: int, k: int) -> np.ndarray:
    """Weights (L, m) of the lattice {w : w_i in {0, 1/k, ..., 1}, sum w = 1} without its m
    vertices, in a fixed order."""
    from itertools import combinations_with_replacement

    rows = []
    for parts in combinations_with_replacement(range(m), k):
        counts = np.bincount(parts, minlength=m)
        if counts.max() < k:
            rows.append(counts / k)
    return np.array(rows).reshape(-1, m)


def conditions_between(
    task: TaskSpec,
    arm: ArmDescription,
    conditions: list[Condition],
    n: int,
    rng: np.random.Generator,
    max_resolution: int = 8,
) -> list[Condition]:
    """``n`` held-out conditions on a grid between ``conditions``: convex combinations of their
    initial configurations and targets, with weights on :func:`simplex_lattice` at the coarsest
    resolution that offers ``n`` valid points (``rng`` picks which, reproducibly). Valid as for
    :func:`make_conditions` (:func:`_valid_condition`): the ee points start clear above the
    target and the goal is reachable. None is a training condition (the lattice leaves the
    vertices out), and each lies where the training conditions say something about it: between
    them, as GPS evaluates generalisation (new hole positions between the trained ones).

    Raises:
        TaskError: fewer than 2 conditions, conditions with their own ``target_points`` (a blend
            of rigid goal poses is no goal pose), or not ``n`` valid points up to
            ``max_resolution``.
    """
    if n < 1:
        raise TaskError(f"n: expected at least 1 condition, found {n}")
    if len(conditions) < 2:
        raise TaskError("conditions_between: expected at least 2 conditions to lie between, "
                        f"found {len(conditions)}")
    if any(c.target_points is not None for c in conditions):
        raise TaskError("conditions_between: conditions with their own target_points (goal "
                        "poses from forward kinematics) cannot be blended")
    kin = task_kinematics(task, arm)
    home = ready_configuration(task, arm)
    Q = np.array([c.joint_positions for c in conditions])
    P = np.array([c.target_position for c in conditions])
    for k in range(2, max_resolution + 1):
        weights = simplex_lattice(len(conditions), k)
        if len(weights) < n:
            continue
        chosen = []
        for w in weights[rng.permutation(len(weights))]:
            candidate = Condition(w @ Q, w @ P)
            if _valid_condition(task, kin, home, candidate):
                chosen.append(candidate)
                if len(chosen) == n:
                    return chosen
    raise TaskError(f"conditions_between: no {n} valid conditions between the "
                    f"{len(conditions)} given up to resolution {max_resolution}")


def make_fk_conditions(
    task: TaskSpec,
    arm: ArmDescription,
    n: int,
    rng: np.random.Generator,
    joint_spread: float = 0.3,
    goal_spread: float = 0.6,
    min_distance: float = 0.1,
    max_tries: int = 200,
) -> list[Condition]:
    """Reach conditions for any serial arm: goals from the forward kinematics of random
    configurations, so every target is reachable with an orientation the arm can take.

    Home is the middle of the joint ranges. Each condition draws an initial configuration
    home ± ``joint_spread`` and a goal configuration home ± ``goal_spread`` (rad), and keeps the
    pair if the first ee point has to move at least ``min_distance`` (m). The target points are
    the ee points at the goal configuration. Only ``rng`` draws randomness.

    Raises:
        TaskError: ``n`` < 1, or no pair found within ``max_tries`` draws.
    """
    if n < 1:
        raise TaskError(f"n: expected at least 1 condition, found {n}")
    kin = task_kinematics(task, arm)
    home = (arm.lower + arm.upper) / 2
    conditions = []
    for index in range(n):
        for _ in range(max_tries):
            q0 = np.clip(home + rng.uniform(-joint_spread, joint_spread, arm.n_joints),
                         arm.lower, arm.upper)
            q_goal = np.clip(home + rng.uniform(-goal_spread, goal_spread, arm.n_joints),
                             arm.lower, arm.upper)
            goal_points = kin.ee_points(q_goal)
            if np.linalg.norm(kin.ee_points(q0)[0] - goal_points[0]) >= min_distance:
                conditions.append(Condition(q0, goal_points[0], goal_points))
                break
        else:
            raise TaskError(f"condition {index}: no initial/goal pair {min_distance} m apart in "
                            f"{max_tries} draws")
    return conditions
