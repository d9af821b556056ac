"""The drives' torque-speed curve (mbpl_sim.base) against closed forms and against pinocchio."""

import numpy as np
import pytest
from test_sim_backends import check_dynamics_against_pinocchio

from mbpl_sim import make_sim

# spinner1.urdf: one joint about the vertical axis (gravity does no work on it).
INERTIA, EFFORT, SPEED, DAMPING, STEP = 0.002, 10.0, 2.0, 0.1, 0.001
BETA = STEP * EFFORT / (SPEED * INERTIA)  # 2.5: explicit in qd, the curve would oscillate


def spinner_velocities(sim, qd0: float, command: float, n_steps: int) -> np.ndarray:
    sim.set_state(np.zeros(1), np.array([qd0]))
    velocities = []
    for _ in range(n_steps):
        sim.step(np.array([command]))
        velocities.append(sim.joint_velocities()[0])
    return np.array(velocities)


def spinner_closed_form(qd0: float, n_steps: int) -> np.ndarray:
    """qd_k under a full-effort command with the curve binding: the linear recurrence
    qd' = a qd + b of a semi-implicit Euler step with the drive's bound taken at qd'."""
    a = 1.0 / (1.0 + BETA) - STEP * DAMPING / INERTIA
    b = STEP * EFFORT / (INERTIA * (1.0 + BETA))
    terminal = b / (1.0 - a)
    k = np.arange(1, n_steps + 1)
    return terminal + (qd0 - terminal) * a**k


@pytest.fixture
def spinner(backend, spinner1_urdf):
    with make_sim(backend, spinner1_urdf, "disc", task="reach") as sim:
        yield sim


def test_full_effort_approaches_the_velocity_limit_and_does_not_pass_it(spinner):
    terminal = EFFORT / (EFFORT / SPEED + (1.0 + BETA) * DAMPING)
    assert 0.9 * SPEED < terminal < SPEED
    for command in (EFFORT, 10 * EFFORT):  # the effort clamp first, then the curve
        measured = spinner_velocities(spinner, 0.0, command, 40)
        np.testing.assert_allclose(measured, spinner_closed_form(0.0, 40), rtol=1e-9)
        assert np.all(np.diff(measured) >= 0) and measured.max() < SPEED
        assert measured[-1] == pytest.approx(terminal, rel=1e-9)
    reverse = spinner_velocities(spinner, 0.0, -EFFORT, 40)
    np.testing.assert_allclose(reverse, -spinner_closed_form(0.0, 40), rtol=1e-9)


def test_the_drive_brakes_a_joint_pushed_beyond_its_velocity_limit(spinner):
    measured = spinner_velocities(spinner, 1.5 * SPEED, EFFORT, 40)
    np.testing.assert_allclose(measured, spinner_closed_form(1.5 * SPEED, 40), rtol=1e-9)
    assert np.all(np.diff(measured) <= 0) and measured[-1] < SPEED
    # Pushing forward at full effort, the drive delivers a braking torque on the first step.
    first_torque = INERTIA * (measured[0] - 1.5 * SPEED) / STEP + DAMPING * 1.5 * SPEED
    assert first_torque == pytest.approx(EFFORT * (1 - 1.5) / (1 + BETA), rel=1e-9)


def test_a_torque_within_the_curve_is_delivered_unchanged(spinner):
    # At rest the curve allows EFFORT / (1 + BETA) = 2.86 N m.
    measured = spinner_velocities(spinner, 0.0, 0.2 * EFFORT, 1)
    assert measured[0] == pytest.approx(STEP * 0.2 * EFFORT / INERTIA, rel=1e-12)


def test_arm_accelerations_at_speed_match_pinocchio_with_the_curve(backend):
    """At up to 1.5x the velocity limits and full effort the curve binds on most joints; each
    engine's one-step acceleration is still pinocchio's with the curve's torque."""
    with make_sim(backend, task="reach") as sim:
        curve_bound = check_dynamics_against_pinocchio(sim, n_states=8, seed=21, speed=1.5,
                                                       torque_scale=1.0)
    assert curve_bound >= 28  # of 56 joint torques: the curve was exercised, not bypassed
