"""Tasks and conditions: reproducible, reachable, geometrically sound (no engine)."""

import numpy as np
import pytest

from mbpl_sim import (
    DEFAULT_EE_LINK,
    ArmDescription,
    Condition,
    TaskError,
    TaskSpec,
    conditions_between,
    goal_configuration,
    make_conditions,
    make_task,
)
from mbpl_sim.tasks import simplex_lattice, task_kinematics


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


@pytest.mark.parametrize(("m", "k"), [(2, 3), (4, 2), (4, 3), (8, 2)])
def test_simplex_lattice_is_every_non_vertex_point_of_the_grid(m, k):
    from math import comb

    weights = simplex_lattice(m, k)
    assert weights.shape == (comb(k + m - 1, m - 1) - m, m)  # stars and bars, less the vertices
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights * k, np.round(weights * k), atol=1e-12)
    assert weights.max() < 1.0 and weights.min() >= 0.0
    assert len({tuple(np.round(w * k).astype(int)) for w in weights}) == len(weights)


def test_conditions_between_lie_between_the_training_conditions(arm):
    task = make_task("peg")
    training = make_conditions(task, arm, 4, np.random.default_rng(0))
    held_out = conditions_between(task, arm, training, 10, np.random.default_rng(1000))
    again = conditions_between(task, arm, training, 10, np.random.default_rng(1000))
    assert len(held_out) == 10
    # Recover each one's weights from its q0 and target (11 equations, 4 unknowns, + sum = 1).
    A = np.vstack([np.array([np.concatenate([c.joint_positions, c.target_position])
                             for c in training]).T, np.ones((1, 4))])
    kin = task_kinematics(task, arm)
    for c, d in zip(held_out, again, strict=True):
        np.testing.assert_array_equal(c.joint_positions, d.joint_positions)
        w, *_ = np.linalg.lstsq(A, np.concatenate([c.joint_positions, c.target_position, [1]]),
                                rcond=None)
        np.testing.assert_allclose(A @ w, np.concatenate([c.joint_positions, c.target_position,
                                                          [1]]), atol=1e-9)
        assert w.min() > -1e-9 and w.max() < 1 - 1e-9  # inside the hull, not a training vertex
        np.testing.assert_allclose(w * 3, np.round(w * 3), atol=1e-6)  # 16 points at k = 3
        points = kin.ee_points(c.joint_positions)
        assert np.all(points[:, 2] >= c.target_position[2] + task.init_clearance)
        goal_configuration(task, arm, c)  # reachable (raises otherwise)
    assert len({tuple(c.target_position) for c in held_out}) == 10


def test_conditions_between_refuses_what_cannot_be_blended(arm):
    task = make_task("reach")
    training = make_conditions(task, arm, 3, np.random.default_rng(0))
    with pytest.raises(TaskError, match="at least 2"):
        conditions_between(task, arm, training[:1], 2, np.random.default_rng(0))
    posed = [Condition(c.joint_positions, c.target_position, np.zeros((2, 3)))
             for c in training]
    with pytest.raises(TaskError, match="target_points"):
        conditions_between(task, arm, posed, 2, np.random.default_rng(0))
    with pytest.raises(TaskError, match="no 200 valid"):
        conditions_between(task, arm, training, 200, np.random.default_rng(0), max_resolution=3)
