"""Tasks and conditions: reproducible, reachable, geometrically sound (no engine)."""

import numpy as np
import pytest

from mbpl_sim import (
    DEFAULT_EE_LINK,
    ArmDescription,
    Condition,
    TaskError,
    TaskSpec,
    goal_configuration,
    make_conditions,
    make_task,
)
from mbpl_sim.tasks import task_kinematics


@pytest.fixture(scope="module")
def arm(arm7_urdf) -> ArmDescription:
    return ArmDescription.from_urdf(arm7_urdf, DEFAULT_EE_LINK)


@pytest.mark.parametrize("name", ["reach", "peg"])
def test_one_seed_gives_one_list_of_valid_conditions(arm, name):
    task = make_task(name)
    first = make_conditions(task, arm, 4, np.random.default_rng(7))
    again = make_conditions(task, arm, 4, np.random.default_rng(7))
    other = make_conditions(task, arm, 4, np.random.default_rng(8))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
        np.testing.assert_array_equal(a.target_position, b.target_position)
    assert not np.allclose(first[0].target_position, other[0].target_position)
    kin = task_kinematics(task, arm)
    for condition in first:
        arm.check_positions(condition.joint_positions)
        target = condition.target_position
        assert np.all(target >= task.target_low) and np.all(target <= task.target_high)
        points = kin.ee_points(condition.joint_positions)
        assert np.all(points[:, 2] >= target[2] + task.init_clearance)
        assert task.distance(points, condition) >= task.init_clearance
        q_goal = goal_configuration(task, arm, condition)
        np.testing.assert_allclose(kin.ee_points(q_goal), task.target_points(condition), atol=1e-3)
        assert task.success(kin.ee_points(q_goal), condition)


def test_peg_targets_are_hole_bottoms_in_the_workspace(arm):
    task = TaskSpec.peg()
    hole = task.hole
    assert task.target_low[2] == task.target_high[2] == hole.floor_thickness
    assert 0.45 <= task.target_low[0] and task.target_high[0] <= 0.6
    assert hole.hole_half_width - hole.peg_radius == pytest.approx(hole.clearance)
    assert 0.002 <= hole.clearance <= 0.01
    assert 0.08 <= hole.depth <= 0.1
    boxes = hole.boxes()
    # The four walls leave exactly the square hole free around the axis, from z = 0 to the top.
    for centre, half in boxes[1:]:
        inner = np.abs(centre[:2]) - half[:2]
        assert max(inner) == pytest.approx(hole.hole_half_width)
        assert centre[2] - half[2] == pytest.approx(0.0)
        assert centre[2] + half[2] == pytest.approx(hole.depth)
    floor_centre, floor_half = boxes[0]
    assert floor_centre[2] + floor_half[2] == pytest.approx(0.0)  # hole bottom
    assert floor_centre[2] - floor_half[2] == pytest.approx(-hole.floor_thickness)  # on the table


def test_target_points_and_success():
    task = TaskSpec.peg()
    condition = Condition(np.zeros(7), np.array([0.5, 0.1, 0.02]))
    np.testing.assert_allclose(task.target_points(condition), [[0.5, 0.1, 0.02], [0.5, 0.1, 0.12]])
    inside = task.target_points(condition) + [0.0, 0.0, 0.015]
    assert task.distance(inside, condition) == pytest.approx(0.015)
    assert task.success(inside, condition)
    assert not task.success(inside + [0.0, 0.0, 0.01], condition)


def test_bad_inputs_raise_task_errors(arm):
    with pytest.raises(TaskError, match="unknown task 'push'"):
        make_task("push")
    with pytest.raises(TaskError, match="target_position: expected a finite vector"):
        Condition(np.zeros(7), np.array([0.0, np.nan, 0.0]))
    with pytest.raises(TaskError, match="at least 1"):
        make_conditions(make_task("reach"), arm, 0, np.random.default_rng(0))
    far = TaskSpec.reach(target_low=np.array([2.0, 0, 0.1]), target_high=np.array([2.1, 0, 0.1]))
    with pytest.raises(TaskError):
        make_conditions(far, arm, 1, np.random.default_rng(0), max_tries=3)
