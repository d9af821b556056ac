"""Both engines against the description, against pinocchio, and against bad input."""

import numpy as np
import pytest
from sim_helpers import random_free_state

import mbpl_sim
from mbpl_ros.kinematics import ArmKinematics
from mbpl_sim import ArmDescription, Condition, SimError, TaskSpec, make_conditions, make_sim
from mbpl_sim.base import look_at_rotation

# Semi-implicit (symplectic) Euler updates qd_{t+1} = qd_t + h * qdd(q_t, qd_t, tau_t) with both
# engines integrating the joint damping explicitly, so the one-step finite difference
# (qd_{t+1} - qd_t) / h *is* the model acceleration at the start state; no O(h) error enters.
# What remains is floating-point round-off (measured ~1e-13 relative). 1e-6 relative to the largest
# acceleration leaves room for summation-order differences and still flags a 0.01 % model mismatch
# (an inertia, damping, gravity or armature difference shows at 1e-3 or more).
QDD_RTOL = 1e-6
FK_ATOL = 1e-6  # m; PyBullet reports link poses with ~1e-8 m round-off


def kinematics_of(sim) -> ArmKinematics:
    arm = sim.description
    return ArmKinematics(arm.urdf_path, arm.ee_link, sim.task.ee_points_local, arm.joint_names)


def one_step_accelerations(sim, q, qd, torque):
    sim.set_state(q, qd)
    applied = sim.step(torque)
    return (sim.joint_velocities() - qd) / sim.timestep, applied


def delivered_torque(sim, kin: ArmKinematics, q, qd, applied) -> np.ndarray:
    """The drives' torque for the clamped command ``applied``: the torque-speed curve of
    mbpl_sim.base taken at the end of the step, with the joints' inertias from pinocchio."""
    effort, speed = sim.description.effort_limits, sim.description.velocity_limits
    own_acceleration = np.diag(np.linalg.inv(kin.mass_matrix(q)))
    gain = 1.0 + sim.timestep * own_acceleration * effort / speed
    return np.clip(applied, -effort * (1 + qd / speed) / gain, effort * (1 - qd / speed) / gain)


def check_dynamics_against_pinocchio(sim, n_states: int, seed: int, speed: float = 1.0,
                                     torque_scale: float = 0.3) -> int:
    """Asserts that the one-step accelerations at random states (|qd| <= speed x the velocity
    limits, torques up to torque_scale x the effort limits) match pinocchio's to QDD_RTOL.
    Returns how many joint torques the drives' curve changed."""
    kin = kinematics_of(sim)
    rng = np.random.default_rng(seed)
    arm = sim.description
    curve_bound = 0
    for _ in range(n_states):
        q, _ = random_free_state(sim, rng)
        qd = rng.uniform(-speed, speed, arm.n_joints) * arm.velocity_limits
        torque = rng.uniform(-torque_scale, torque_scale, arm.n_joints) * arm.effort_limits
        measured, applied = one_step_accelerations(sim, q, qd, torque)
        delivered = delivered_torque(sim, kin, q, qd, applied)
        curve_bound += int(np.count_nonzero(delivered != applied))
        tau = delivered + (kin.gravity(q) if sim.config.gravity_compensation else 0.0)
        reference = kin.forward_dynamics(q, qd, tau)  # subtracts the URDF damping D qd
        error = np.abs(measured - reference).max() / np.abs(reference).max()
        assert error < QDD_RTOL, f"qdd {measured} vs pinocchio {reference}"
    return curve_bound


@pytest.mark.parametrize("gravity_compensation", [True, False])
def test_accelerations_match_pinocchio_aba(backend, gravity_compensation):
    with make_sim(backend, task="reach", gravity_compensation=gravity_compensation) as sim:
        check_dynamics_against_pinocchio(sim, n_states=10, seed=11)


def test_engine_loads_the_description(reach_sim, arm7_urdf):
    arm = ArmDescription.from_urdf(arm7_urdf, mbpl_sim.DEFAULT_EE_LINK)
    joints = reach_sim.engine_joints()
    assert joints.names == arm.joint_names == reach_sim.description.joint_names
    np.testing.assert_allclose(joints.lower, arm.lower)
    np.testing.assert_allclose(joints.upper, arm.upper)
    np.testing.assert_allclose(joints.effort, arm.effort_limits)
    np.testing.assert_allclose(joints.damping, arm.damping)


def test_ee_points_match_pinocchio_fk(reach_sim):
    kin = kinematics_of(reach_sim)
    rng = np.random.default_rng(5)
    for _ in range(10):
        q, _ = random_free_state(reach_sim, rng)
        np.testing.assert_allclose(reach_sim.ee_points_world(), kin.ee_points(q), atol=FK_ATOL)


def test_second_urdf_loads_with_its_own_ee_link(backend, arm3_urdf):
    with make_sim(backend, arm3_urdf, "hand", task="reach") as sim:
        arm = sim.description
        assert arm.joint_names == ("yaw", "shoulder", "elbow")
        assert sim.engine_joints().names == arm.joint_names
        kin = kinematics_of(sim)
        q = np.array([0.3, 0.5, -0.8])
        sim.set_state(q, np.zeros(3))
        np.testing.assert_allclose(sim.ee_points_world(), kin.ee_points(q), atol=FK_ATOL)
        check_dynamics_against_pinocchio(sim, n_states=3, seed=12)
        assert sim.render().shape == (64, 64, 3)
    with pytest.raises(mbpl_sim.UrdfError, match="available links"):
        make_sim(backend, arm3_urdf, "tool")


def test_bad_torque_raises_and_leaves_state_unchanged(reach_sim):
    rng = np.random.default_rng(6)
    q, qd = random_free_state(reach_sim, rng)
    time_before = reach_sim.sim_time
    bad_inputs = [np.full(7, np.nan), np.r_[np.zeros(6), np.inf], np.zeros(6), np.zeros((7, 1))]
    for bad in bad_inputs:
        with pytest.raises(ValueError, match="torque: expected"):
            reach_sim.step(bad)
    with pytest.raises(ValueError, match="n_steps"):
        reach_sim.step(np.zeros(7), n_steps=0)
    np.testing.assert_array_equal(reach_sim.joint_positions(), q)
    np.testing.assert_array_equal(reach_sim.joint_velocities(), qd)
    assert reach_sim.sim_time == time_before
    with pytest.raises(ValueError, match="joint velocities"):
        reach_sim.set_state(q, np.zeros(3))


def test_torques_beyond_limits_are_clamped(reach_sim):
    rng = np.random.default_rng(7)
    q, qd = random_free_state(reach_sim, rng)
    limits = reach_sim.description.effort_limits
    signs = np.where(rng.uniform(size=7) > 0.5, 1.0, -1.0)
    huge, applied = one_step_accelerations(reach_sim, q, qd, 10 * signs * limits)
    np.testing.assert_array_equal(applied, signs * limits)
    at_limit, _ = one_step_accelerations(reach_sim, q, qd, signs * limits)
    np.testing.assert_allclose(huge, at_limit, rtol=1e-12, atol=1e-9)


def check_reset(sim) -> None:
    conditions = make_conditions(sim.task, sim.description, 2, np.random.default_rng(3))
    for condition in conditions:
        sim.step(np.ones(7), n_steps=5)
        sim.reset(condition)
        assert sim.sim_time == 0.0 and sim.condition is condition
        np.testing.assert_allclose(sim.joint_positions(), condition.joint_positions, atol=1e-12)
        np.testing.assert_array_equal(sim.joint_velocities(), np.zeros(7))
        np.testing.assert_allclose(sim.target_position(), condition.target_position, atol=1e-9)
        assert sim.n_contacts() == 0
    sim.step(np.zeros(7), n_steps=20)
    assert sim.sim_time == pytest.approx(0.02)
    with pytest.raises(ValueError, match="outside the URDF limits"):
        sim.reset(Condition(np.full(7, 2.5), conditions[0].target_position))


def test_reset_places_arm_and_reach_target(reach_sim):
    check_reset(reach_sim)


def test_reset_places_arm_and_hole(peg_sim):
    check_reset(peg_sim)


def test_gravity_compensation_holds_the_arm(reach_sim):
    condition = make_conditions(reach_sim.task, reach_sim.description, 1,
                                np.random.default_rng(4))[0]
    reach_sim.reset(condition)
    reach_sim.step(np.zeros(7), n_steps=200)
    np.testing.assert_allclose(reach_sim.joint_positions(), condition.joint_positions, atol=1e-9)


def test_camera_images(reach_sim):
    conditions = make_conditions(reach_sim.task, reach_sim.description, 2,
                                 np.random.default_rng(9))
    reach_sim.reset(conditions[0])
    first = reach_sim.render()
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert first.std() > 20 and len(np.unique(first.reshape(-1, 3), axis=0)) > 20  # not blank
    moved = conditions[0].joint_positions + np.array([0.6, 0.4, 0, -0.4, 0, 0.3, 0])
    reach_sim.set_state(moved, np.zeros(7))
    second = reach_sim.render()
    changed = np.any(first != second, axis=2).mean()
    assert changed > 0.02, f"only {changed:.1%} of the pixels changed when the arm moved"
    assert reach_sim.render(32, 48).shape == (48, 32, 3)
    with pytest.raises(ValueError, match="width"):
        reach_sim.render(0, 64)


def test_factory_errors_and_close(backend):
    with pytest.raises(ValueError, match=r"unknown backend 'gazebo'; expected one of"):
        make_sim("gazebo")
    with pytest.raises(ValueError, match="SimConfig fields"):
        make_sim(backend, camera_fov=30)
    sim = make_sim(backend)
    sim.close()
    sim.close()
    with pytest.raises(SimError, match="closed"):
        sim.step(np.zeros(7))


@pytest.mark.parametrize("backend", ["mujoco", "pybullet"])
def test_a_world_camera_pose_overrides_the_urdf_camera(backend):
    """camera_eye / camera_look_at: the reach target placed on the optical axis (at look_at)
    appears at the image centre, and one placed 0.1 m to the camera's right (horizontal
    distance d from the eye) right of it by f 0.1 / d pixels (pinhole model, f = (H / 2) /
    tan(fovy / 2)); the URDF camera sees the scene elsewhere."""
    eye, look = (0.5, -1.0, 0.45), (0.5, 0.0, 0.15)
    size, fovy = 64, 35.0
    focal = (size / 2) / np.tan(np.radians(fovy) / 2)

    def red_centroid(image):
        img = image.astype(float)
        mask = (img[..., 0] > 120) & (img[..., 1] < 0.5 * img[..., 0]) & (
            img[..., 2] < 0.5 * img[..., 0])
        rows, cols = np.nonzero(mask)
        assert len(rows) > 0, "target not in the image"
        return cols.mean() + 0.5, rows.mean() + 0.5  # pixel centres, x right, y down

    with make_sim(backend, task="reach", camera_eye=eye, camera_look_at=look,
                  camera_fovy_deg=fovy) as sim, make_sim(backend, task="reach",
                                                         camera_fovy_deg=fovy) as urdf_cam:
        q_away = np.zeros(sim.description.n_joints)  # arm upright, out of the way
        for target, expected_x in (((0.5, 0.0, 0.15), size / 2),
                                   ((0.6, 0.0, 0.15), size / 2 + focal * 0.1 / np.hypot(1.0, 0.3))):
            condition = Condition(q_away, np.array(target))
            sim.reset(condition)
            x, y = red_centroid(sim.render(size, size))
            assert x == pytest.approx(expected_x, abs=1.0)
            # A sideways offset leaves the row at the centre.
            assert y == pytest.approx(size / 2, abs=1.5)
        urdf_cam.reset(Condition(q_away, np.array((0.5, 0.0, 0.15))))
        assert np.abs(urdf_cam.render(size, size).astype(float)
                      - sim.render(size, size).astype(float)).mean() > 5.0
    with pytest.raises(ValueError, match="camera_eye"):
        make_sim(backend, task="reach", camera_eye=(0.5, 0.0, 0.15), camera_look_at=look)
    with pytest.raises(ValueError, match="camera_look_at"):
        make_sim(backend, task="reach", camera_look_at=look)


@pytest.mark.parametrize("backend", ["mujoco", "pybullet"])
def test_the_reach_target_stands_on_a_rod_with_a_foot_on_the_table(backend):
    """Pinhole projections (world camera, f = (H / 2) / tan(fovy / 2)) of the foot (on the table
    under the ball, 2 cm either side of the rod) and of the rod's middle show the stand's dark
    colour and follow the target; without the stand (``stand=None``) they show the table, and
    without a table nothing of the stand is drawn."""
    eye, look = np.array([0.5, -1.0, 0.45]), np.array([0.5, 0.0, 0.1])
    size, fovy = 96, 35.0
    focal = (size / 2) / np.tan(np.radians(fovy) / 2)
    rotation = look_at_rotation(eye, look)

    def darkest_near(image, point):
        c = rotation.T @ (np.asarray(point) - eye)
        col, row = int(size / 2 + focal * c[0] / c[2]), int(size / 2 + focal * c[1] / c[2])
        return int(image[row - 1:row + 2, col - 1:col + 2].max(axis=2).min())

    camera = {"camera_eye": tuple(eye), "camera_look_at": tuple(look), "camera_fovy_deg": fovy}
    q_away = np.zeros(7)
    with make_sim(backend, task="reach", **camera) as sim, \
            make_sim(backend, task=TaskSpec.reach(stand=None), **camera) as bare:
        radius = sim.task.target_radius
        for target in ((0.45, -0.1, 0.25), (0.6, 0.15, 0.1)):
            x, y, z = target
            feet, rod = ((x - 0.02, y, 0.0), (x + 0.02, y, 0.0)), (x, y, (z - radius) / 2)
            for s in (sim, bare):
                s.reset(Condition(q_away, np.array(target)))
            with_stand, without = sim.render(size, size), bare.render(size, size)
            for point in (*feet, rod):
                assert darkest_near(with_stand, point) < 60
                assert darkest_near(without, point) > 80
    with make_sim(backend, task="reach", table=False, **camera) as no_table, \
            make_sim(backend, task=TaskSpec.reach(stand=None), table=False, **camera) as neither:
        for s in (no_table, neither):
            s.reset(Condition(q_away, np.array((0.45, -0.1, 0.25))))
        np.testing.assert_array_equal(no_table.render(size, size), neither.render(size, size))
