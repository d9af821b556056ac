"""Joint-space PD control: gains, the reset law (PD tracking of a minimum-jerk path) and its
convergence test.

The simulated arm (and the torque interfaces of Franka/KUKA arms it imitates) compensates gravity
itself, so a PD law needs no gravity term: tau = kp (q_ref - q) + kd (qd_ref - qd).
Reset does not jump the set point to q0: it tracks a minimum-jerk path from where the arm is, whose
peak speed is bounded, so the torques stay small and the arm moves predictably near an operator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PdGains:
    """Joint-space stiffness and damping matrices: tau = kp (q_ref - q) + kd (qd_ref - qd).

    Attributes:
        kp: (n, n) stiffness, N m/rad (diagonal for independent joint gains).
        kd: (n, n) damping, N m s/rad.

    Gains derived from the diagonal of the mass matrix (each joint seen with the others locked)
    are far too stiff for the distal coupling of a real arm: with the others free, joint 1 of the
    7-DoF arm feels 1/17 of M_11, and such a PD goes unstable with 5 ms of loop delay. Hence
    :meth:`from_inertia` with the full mass matrix: M^-1 kp = ω² I, every mode at ω.
    """

    kp: np.ndarray
    kd: np.ndarray

    def __post_init__(self) -> None:
        kp = np.asarray(self.kp, dtype=float)
        kd = np.asarray(self.kd, dtype=float)
        kp = np.diag(kp) if kp.ndim == 1 else kp.copy()
        kd = np.diag(kd) if kd.ndim == 1 else kd.copy()
        n = kp.shape[0] if kp.ndim == 2 else 0
        if n == 0 or kp.shape != (n, n) or kd.shape != (n, n):
            raise ValueError(f"PdGains: expected kp and kd of shape (n,) or (n, n), found "
                             f"{np.shape(self.kp)} and {np.shape(self.kd)}")
        for name, value in (("kp", kp), ("kd", kd)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"PdGains.{name}: expected finite gains, found {value}")
            symmetric = 0.5 * (value + value.T)
            if np.linalg.eigvalsh(symmetric).min() < -1e-9 * max(1.0, np.abs(value).max()):
                raise ValueError(f"PdGains.{name}: expected a positive semi-definite matrix "
                                 f"(gains >= 0), found {value}")
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @classmethod
    def from_inertia(cls, inertia: np.ndarray, frequency_hz: float,
                     damping_ratio: float = 1.0) -> PdGains:
        """kp = ω² M, kd = 2 ζ ω M (ω = 2π ``frequency_hz``) for a mass matrix M (n, n), kg m²,
        so that every joint-space mode has natural frequency ω and damping ratio ζ; a vector
        (n,) is taken as a diagonal M."""
        inertia = np.asarray(inertia, dtype=float)
        matrix = np.diag(inertia) if inertia.ndim == 1 else inertia
        n = matrix.shape[0] if matrix.ndim == 2 else 0
        if n == 0 or matrix.shape != (n, n) or not np.all(np.isfinite(matrix)) \
                or np.linalg.eigvalsh(0.5 * (matrix + matrix.T)).min() <= 0:
            raise ValueError(f"inertia: expected a positive definite (n, n) matrix or positive "
                             f"(n,) vector, found {inertia}")
        if not frequency_hz > 0 or not damping_ratio >= 0:
            raise ValueError(f"expected frequency_hz > 0 and damping_ratio >= 0, found "
                             f"{frequency_hz} and {damping_ratio}")
        omega = 2 * np.pi * frequency_hz
        matrix = 0.5 * (matrix + matrix.T)
        return cls(omega**2 * matrix, 2 * damping_ratio * omega * matrix)

    @property
    def n_joints(self) -> int:
        return int(self.kp.shape[0])

    def torque(self, q: np.ndarray, qd: np.ndarray, q_ref: np.ndarray,
               qd_ref: np.ndarray | None = None) -> np.ndarray:
        """kp (q_ref - q) + kd (qd_ref - qd), N m (n,); qd_ref defaults to zero."""
        if qd_ref is None:
            return self.kp @ (q_ref - q) - self.kd @ qd
        return self.kp @ (q_ref - q) + self.kd @ (qd_ref - qd)


class MinimumJerkPath:
    """q(t) from ``q_start`` to ``q_goal`` (n,) over ``duration`` s with zero velocity and
    acceleration at both ends: q = q_start + (q_goal - q_start) s(τ), s = 10τ³ - 15τ⁴ + 6τ⁵,
    τ = t / duration. The peak speed is 1.875 |Δq| / duration."""

    PEAK_SPEED_FACTOR = 1.875

    def __init__(self, q_start: np.ndarray, q_goal: np.ndarray, duration: float) -> None:
        if not duration > 0:
            raise ValueError(f"duration: expected > 0 s, found {duration}")
        self.q_start = np.asarray(q_start, dtype=float).copy()
        self.q_goal = np.asarray(q_goal, dtype=float).copy()
        self.duration = float(duration)
        self._delta = self.q_goal - self.q_start

    @classmethod
    def with_peak_speed(cls, q_start: np.ndarray, q_goal: np.ndarray, max_speed: float,
                        min_duration: float) -> MinimumJerkPath:
        """The path whose fastest joint peaks at ``max_speed`` rad/s (at least ``min_duration``)."""
        if not max_speed > 0:
            raise ValueError(f"max_speed: expected > 0 rad/s, found {max_speed}")
        distance = float(np.max(np.abs(np.asarray(q_goal) - np.asarray(q_start))))
        return cls(q_start, q_goal,
                   max(min_duration, cls.PEAK_SPEED_FACTOR * distance / max_speed))

    def reference(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Position (n,) and velocity (n,) of the path at time ``t`` s since its start."""
        tau = min(max(t / self.duration, 0.0), 1.0)
        s = tau**3 * (10 - 15 * tau + 6 * tau**2)
        ds = 30 * tau**2 * (1 - tau) ** 2 / self.duration
        return self.q_start + self._delta * s, self._delta * ds


@dataclass(frozen=True)
class ResetSettings:
    """When a reset is done and how fast it may move.

    Attributes:
        position_tolerance: largest |q - q0| over the joints for "arrived", rad.
        velocity_tolerance: largest |qd| over the joints for "at rest", rad/s.
        timeout_s: a reset not done after this long gives up (the executor then holds), s.
        max_velocity: peak joint speed of the reference path, rad/s.
        min_duration_s: shortest reference path, s.
    """

    position_tolerance: float = 0.01
    velocity_tolerance: float = 0.05
    timeout_s: float = 10.0
    max_velocity: float = 0.5
    min_duration_s: float = 0.2

    def __post_init__(self) -> None:
        for name in ("position_tolerance", "velocity_tolerance", "timeout_s", "max_velocity"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"ResetSettings.{name}: expected a finite value > 0, found "
                                 f"{value}")
        if not self.min_duration_s > 0:
            raise ValueError(f"ResetSettings.min_duration_s: expected > 0 s, found "
                             f"{self.min_duration_s}")


class ResetOutcome(enum.Enum):
    RUNNING = "running"
    CONVERGED = "converged"
    TIMED_OUT = "timed out"


class ResetLaw:
    """PD tracking of a minimum-jerk path to ``q_goal`` started at time ``t0`` from ``q_start``.

    Call :meth:`torque` every control tick and :meth:`outcome` to know when to stop. Times are on
    one monotonic clock, s.
    """

    def __init__(self, gains: PdGains, settings: ResetSettings, q_start: np.ndarray,
                 q_goal: np.ndarray, t0: float) -> None:
        q_goal = np.asarray(q_goal, dtype=float)
        if q_goal.shape != (gains.n_joints,) or not np.all(np.isfinite(q_goal)):
            raise ValueError(f"reset goal: expected finite joint positions ({gains.n_joints},), "
                             f"found {q_goal}")
        self.gains = gains
        self.settings = settings
        self.q_goal = q_goal.copy()
        self.t0 = t0
        self.path = MinimumJerkPath.with_peak_speed(q_start, q_goal, settings.max_velocity,
                                                    settings.min_duration_s)

    def torque(self, now: float, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        q_ref, qd_ref = self.path.reference(now - self.t0)
        return self.gains.torque(q, qd, q_ref, qd_ref)

    def errors(self, q: np.ndarray, qd: np.ndarray) -> tuple[float, float]:
        """Largest position error to the goal (rad) and largest speed (rad/s)."""
        return float(np.max(np.abs(q - self.q_goal))), float(np.max(np.abs(qd)))

    def outcome(self, now: float, q: np.ndarray, qd: np.ndarray) -> tuple[ResetOutcome, str]:
        """Whether the reset is done, with a reason naming the errors and tolerances."""
        position_error, speed = self.errors(q, qd)
        s = self.settings
        elapsed = now - self.t0
        if (elapsed >= self.path.duration and position_error <= s.position_tolerance
                and speed <= s.velocity_tolerance):
            return ResetOutcome.CONVERGED, (
                f"reset converged in {elapsed:.2f} s: |q-q0| {position_error:.4f} rad, "
                f"|qd| {speed:.4f} rad/s")
        if elapsed > s.timeout_s:
            return ResetOutcome.TIMED_OUT, (
                f"reset timed out after {s.timeout_s:.1f} s: |q-q0| {position_error:.4f} rad "
                f"(tolerance {s.position_tolerance}), |qd| {speed:.4f} rad/s (tolerance "
                f"{s.velocity_tolerance})")
        return ResetOutcome.RUNNING, ""
