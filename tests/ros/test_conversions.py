"""Round trips of core objects through mbpl_interfaces messages, and rejection of bad ones."""

import numpy as np
import pytest

from mbpl_ros.conversions import (
    MessageError,
    condition_with_overrides,
    controller_from_msg,
    controller_to_msg,
    dynamics_from_msg,
    dynamics_to_msg,
    rollout_from_msg,
    rollout_to_msg,
)
from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.dynamics import LinearGaussianDynamics
from mbpl_ros.core.state import StateLayout

LAYOUT = StateLayout(3, 1)
NAMES = LAYOUT.names()


def random_controller(rng, T=5, dU=3, dX=LAYOUT.dim):
    A = rng.standard_normal((T, dU, dU))
    return LinearGaussianController(rng.standard_normal((T, dU, dX)),
                                    rng.standard_normal((T, dU)),
                                    A @ np.swapaxes(A, 1, 2) + np.eye(dU))


def test_controller_round_trip_is_exact():
    controller = random_controller(np.random.default_rng(0))
    back = controller_from_msg(controller_to_msg(controller, 2, 0.05, NAMES), NAMES)
    np.testing.assert_array_equal(back.K, controller.K)
    np.testing.assert_array_equal(back.k, controller.k)
    np.testing.assert_allclose(back.covar, controller.covar)


def test_reference_state_is_folded_into_the_offset():
    rng = np.random.default_rng(1)
    controller = random_controller(rng)
    msg = controller_to_msg(controller, 0, 0.05, NAMES)
    x_ref = rng.standard_normal((controller.T, controller.dX))
    msg.x_ref = x_ref.ravel().tolist()
    back = controller_from_msg(msg)
    x = rng.standard_normal(controller.dX)
    np.testing.assert_allclose(back.act(3, x), controller.K[3] @ (x - x_ref[3]) + controller.k[3])


@pytest.mark.parametrize("corrupt, message", [
    (lambda m: setattr(m, "gain", list(m.gain)[:-1]), "controller.gain: expected"),
    (lambda m: setattr(m, "offset", [float("nan")] * len(m.offset)), "non-finite"),
    (lambda m: setattr(m, "state_names", ["a"] * len(m.state_names)), "does not match"),
    (lambda m: setattr(m, "dt", -1.0), "dt > 0"),
    (lambda m: setattr(m, "horizon", 0), "positive horizon"),
])
def test_malformed_controllers_are_rejected_with_the_reason(corrupt, message):
    msg = controller_to_msg(random_controller(np.random.default_rng(2)), 0, 0.05, NAMES)
    corrupt(msg)
    with pytest.raises(MessageError, match=message):
        controller_from_msg(msg, NAMES)


def test_rollout_and_dynamics_round_trips():
    rng = np.random.default_rng(3)
    X, U = rng.standard_normal((6, LAYOUT.dim)), rng.standard_normal((5, 3))
    states, actions = rollout_from_msg(rollout_to_msg(X, U, 1, 0.05, NAMES))
    np.testing.assert_array_equal(states, X)
    np.testing.assert_array_equal(actions, U)
    dX, dU, T = LAYOUT.dim, 3, 5
    dyn = LinearGaussianDynamics(rng.standard_normal((T - 1, dX, dX + dU)),
                                 rng.standard_normal((T - 1, dX)),
                                 np.broadcast_to(np.eye(dX), (T - 1, dX, dX)),
                                 rng.standard_normal(dX), np.eye(dX))
    back = dynamics_from_msg(dynamics_to_msg(dyn, 0))
    np.testing.assert_array_equal(back.Fm, dyn.Fm)
    np.testing.assert_array_equal(back.covar, dyn.covar)
    bad = rollout_to_msg(X, U, 1, 0.05, NAMES)
    bad.actions = list(bad.actions)[:-2]
    with pytest.raises(MessageError, match="rollout.actions"):
        rollout_from_msg(bad)


def test_reset_request_overrides_the_table_condition_field_by_field():
    from mbpl_interfaces.srv import ResetToCondition

    from mbpl_sim.tasks import Condition

    base = Condition(np.arange(3.0), np.array([0.5, 0.0, 0.1]), np.ones((2, 3)))
    same = condition_with_overrides(base, ResetToCondition.Request(condition=0))
    np.testing.assert_array_equal(same.joint_positions, base.joint_positions)
    np.testing.assert_array_equal(same.target_points, base.target_points)
    q_only = condition_with_overrides(base, ResetToCondition.Request(joint_positions=[1.0] * 3))
    np.testing.assert_array_equal(q_only.joint_positions, [1.0] * 3)
    np.testing.assert_array_equal(q_only.target_position, base.target_position)
    np.testing.assert_array_equal(q_only.target_points, base.target_points)
    # A new target without points drops the table's points (they belong to the old target).
    moved = condition_with_overrides(base, ResetToCondition.Request(
        target_position=[0.4, 0.1, 0.0]))
    np.testing.assert_array_equal(moved.target_position, [0.4, 0.1, 0.0])
    assert moved.target_points is None
    posed = condition_with_overrides(base, ResetToCondition.Request(
        target_position=[0.4, 0.1, 0.0], target_points=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(posed.target_points, [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
