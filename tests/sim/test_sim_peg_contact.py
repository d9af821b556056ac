"""The peg fits its hole and the block is solid, in both engines (real contacts)."""

import numpy as np
import pytest

from mbpl_sim import Condition, goal_configuration, make_conditions

KP = np.array([300.0, 300, 300, 300, 30, 30, 30])  # N m/rad
KD = np.array([20.0, 20, 20, 20, 1, 1, 0.5])  # N m s/rad


def descend(sim, condition, start: float, stop: float, n_waypoints: int) -> None:
    """Lower the tool along the vertical axis through ``condition``'s target with a joint PD on
    IK waypoints (depth offsets from ``start`` to ``stop`` m above the target), 0.15 s each."""
    task, arm = sim.task, sim.description
    q_goal = goal_configuration(task, arm, condition, depth_offset=start)
    sim.set_state(q_goal, np.zeros(arm.n_joints))
    for offset in np.linspace(start, stop, n_waypoints):
        q_goal = goal_configuration(task, arm, condition, q_seed=q_goal, depth_offset=offset)
        for _ in range(150):
            sim.step(KP * (q_goal - sim.joint_positions()) - KD * sim.joint_velocities())


@pytest.fixture
def condition(peg_sim) -> Condition:
    condition = make_conditions(peg_sim.task, peg_sim.description, 1, np.random.default_rng(1))[0]
    peg_sim.reset(condition)
    return condition


def test_peg_fits_the_hole_without_touching(peg_sim, condition):
    q_inside = goal_configuration(peg_sim.task, peg_sim.description, condition, depth_offset=0.005)
    peg_sim.set_state(q_inside, np.zeros(7))
    assert peg_sim.n_contacts() == 0  # 5 mm above the bottom, 3 mm from every wall


def test_peg_slides_in_down_to_the_bottom(peg_sim, condition):
    # From 1 cm above the block top to a goal 2 cm below the hole bottom: the bottom stops it.
    descend(peg_sim, condition, start=0.09, stop=-0.02, n_waypoints=12)
    tip = peg_sim.ee_points_world()[0]
    assert peg_sim.task.success(peg_sim.ee_points_world(), condition)
    assert tip[2] == pytest.approx(condition.target_position[2], abs=0.003)
    assert peg_sim.n_contacts() > 0


def test_block_top_is_solid(peg_sim, condition):
    hole = peg_sim.task.hole
    # Aim at the middle of the +x wall and push 5 cm into it.
    on_wall = condition.target_position + [hole.hole_half_width + hole.wall_thickness / 2, 0, 0]
    descend(peg_sim, Condition(condition.joint_positions, on_wall), start=0.1, stop=0.03,
            n_waypoints=8)
    top = condition.target_position[2] + hole.depth
    assert peg_sim.ee_points_world()[0][2] == pytest.approx(top, abs=0.003)
    assert peg_sim.n_contacts() > 0
