"""ArmKinematics against finite differences and its own identities (pinocchio only)."""

import numpy as np
import pytest

from mbpl_ros.kinematics import ArmKinematics, KinematicsError
from mbpl_sim import DEFAULT_EE_LINK
from mbpl_sim.tasks import DEFAULT_EE_POINTS_LOCAL


@pytest.fixture(scope="module")
def kin(arm7_urdf) -> ArmKinematics:
    return ArmKinematics(arm7_urdf, DEFAULT_EE_LINK, DEFAULT_EE_POINTS_LOCAL)


def random_q(kin, rng):
    return rng.uniform(0.7 * kin.lower, 0.7 * kin.upper)


def test_points_follow_the_ee_frame(kin):
    # Zero configuration: arm straight up, peg tip at 0.15 + 0.19+0.21+0.19+0.21+0.19+0.08 + 0.05
    # + 0.12 = 1.39 m; the second point 0.1 m lower.
    np.testing.assert_allclose(kin.ee_points(np.zeros(7)), [[0, 0, 1.39], [0, 0, 1.29]], atol=1e-12)


def test_jacobians_match_finite_differences(kin):
    rng = np.random.default_rng(0)
    eps = 1e-6
    for _ in range(3):
        q = random_q(kin, rng)
        jac = kin.ee_jacobians(q)
        for j in range(kin.n_joints):
            dq = np.zeros(kin.n_joints)
            dq[j] = eps
            numeric = (kin.ee_points(q + dq) - kin.ee_points(q - dq)) / (2 * eps)
            np.testing.assert_allclose(jac[:, :, j], numeric, atol=1e-8)


def test_velocities_are_jacobian_times_qd(kin):
    rng = np.random.default_rng(1)
    q, qd = random_q(kin, rng), rng.uniform(-1, 1, 7)
    points, velocities = kin.ee_points_and_velocities(q, qd)
    h = 1e-7
    numeric = (kin.ee_points(q + h * qd) - kin.ee_points(q - h * qd)) / (2 * h)
    np.testing.assert_allclose(points, kin.ee_points(q))
    np.testing.assert_allclose(velocities, numeric, atol=1e-7)


def test_dynamics_identities(kin):
    rng = np.random.default_rng(2)
    q, qd, tau = random_q(kin, rng), rng.uniform(-1, 1, 7), rng.uniform(-5, 5, 7)
    mass = kin.mass_matrix(q)
    np.testing.assert_allclose(mass, mass.T)
    assert np.all(np.linalg.eigvalsh(mass) > 0)
    # At rest: M qdd + g = tau.
    qdd = kin.forward_dynamics(q, np.zeros(7), tau)
    np.testing.assert_allclose(mass @ qdd + kin.gravity(q), tau, atol=1e-9)
    # Default damping is the URDF's, subtracted as -D qd.
    np.testing.assert_allclose(kin.forward_dynamics(q, qd, tau),
                               kin.forward_dynamics(q, qd, tau - kin.damping * qd, damping=0.0))
    assert kin.damping[0] == 0.5


def test_joint_order_is_by_name(arm7_urdf, kin):
    names = tuple(reversed(kin.joint_names))
    flipped = ArmKinematics(arm7_urdf, DEFAULT_EE_LINK, DEFAULT_EE_POINTS_LOCAL, joint_names=names)
    q = random_q(kin, np.random.default_rng(3))
    np.testing.assert_allclose(flipped.ee_points(q[::-1]), kin.ee_points(q))
    np.testing.assert_allclose(flipped.gravity(q[::-1]), kin.gravity(q)[::-1])
    with pytest.raises(KinematicsError, match="expected a permutation"):
        ArmKinematics(arm7_urdf, DEFAULT_EE_LINK, DEFAULT_EE_POINTS_LOCAL, joint_names=names[:3])
    with pytest.raises(KinematicsError, match=r"expected shape \(7,\)"):
        kin.ee_points(np.zeros(6))


def test_inverse_points_reaches_reachable_targets(kin):
    rng = np.random.default_rng(4)
    q_goal = random_q(kin, rng)
    targets = kin.ee_points(q_goal)
    result = kin.inverse_points(targets, q_goal + rng.uniform(-0.3, 0.3, 7))
    assert result.converged and result.max_error < 1e-4
    np.testing.assert_allclose(kin.ee_points(result.q), targets, atol=1e-4)
    assert np.all(result.q >= kin.lower) and np.all(result.q <= kin.upper)
