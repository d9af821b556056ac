"""The executor's overspeed e-stop on the real nodes (a module of its own: its graph must not
share the topics with test_executor.py's module-scoped one)."""

from __future__ import annotations

import numpy as np
import pytest
from ros_helpers import spin_until
from test_executor import Arm, Client, Graph, goal_for

from mbpl_ros.conversions import rollout_from_msg

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def arm() -> Arm:
    return Arm()


def test_a_joint_beyond_its_velocity_bound_estops_the_trial(ros_node, arm):
    # A bound of 5 % of the URDF limits (0.1-0.13 rad/s), which the noisy trial soon exceeds.
    with Graph("lockstep", executor_params={"overspeed_factor": 0.05}) as graph:
        client = Client(ros_node)
        handle = client.send(goal_for(arm, 0, 400, seed=1))
        assert handle.accepted
        result = client.result(handle).result
        assert not result.success and result.rollout.aborted
        assert "beyond their velocity bounds" in result.rollout.abort_reason, \
            result.rollout.abort_reason
        states, _ = rollout_from_msg(result.rollout)
        assert 1 <= result.rollout.horizon < 400
        speeds = np.abs(states[:, arm.layout.joint_velocities])
        # Stopped at the first state beyond the bound: the recorded ones are all within it (the
        # reason gives the speeds of the state that stopped it).
        assert np.all(speeds <= 0.05 * arm.description.velocity_limits)
        assert client.wait_mode("estop")
        assert spin_until(ros_node, lambda: np.all(client.commands[-1][1] == 0.0), 5), \
            "the last command is not zero torque"
        assert graph.alive()
