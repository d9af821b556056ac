"""ArmDescription (xml) and ArmKinematics (pinocchio) read the same chain from a URDF."""

from pathlib import Path

import numpy as np
import pytest

from mbpl_ros.kinematics import ArmKinematics, KinematicsError
from mbpl_sim import DEFAULT_EE_LINK, ArmDescription, UrdfError

ARM7_JOINTS = tuple(f"joint{i}" for i in range(1, 8))


def test_arm7_description(arm7_urdf):
    arm = ArmDescription.from_urdf(arm7_urdf, DEFAULT_EE_LINK)
    assert arm.joint_names == ARM7_JOINTS
    assert arm.root_link == "base_link"
    np.testing.assert_array_equal(arm.effort_limits, [87, 87, 87, 87, 12, 12, 12])
    np.testing.assert_array_equal(arm.damping, [0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1])
    assert np.all(arm.lower < 0) and np.all(arm.upper > 0)
    assert np.all(arm.velocity_limits > 1.0)
    assert arm.massless_links == ()  # frames carry explicit zero-mass inertials


def test_chain_order_not_declaration_order(arm3_urdf):
    # arm3.urdf declares "elbow" first; the chain order is base to end effector.
    arm = ArmDescription.from_urdf(arm3_urdf, "hand")
    assert arm.joint_names == ("yaw", "shoulder", "elbow")
    kin = ArmKinematics(arm3_urdf, "hand", np.zeros((1, 3)))
    assert kin.joint_names == arm.joint_names
    assert arm.massless_links == ("hand",)
    np.testing.assert_array_equal(kin.lower, arm.lower)
    np.testing.assert_array_equal(kin.damping, arm.damping)


def test_missing_link_lists_available_links(arm3_urdf):
    with pytest.raises(UrdfError, match=r"'gripper' not found; available links: root, turret"):
        ArmDescription.from_urdf(arm3_urdf, "gripper")
    with pytest.raises(KinematicsError, match="available links"):
        ArmKinematics(arm3_urdf, "gripper", np.zeros((1, 3)))


def test_movable_joint_off_the_chain_is_rejected(arm3_urdf):
    with pytest.raises(UrdfError, match="'elbow' is not on the chain from 'root' to 'upper'"):
        ArmDescription.from_urdf(arm3_urdf, "upper")


def test_missing_file_and_continuous_joint(tmp_path: Path, arm3_urdf):
    with pytest.raises(UrdfError, match="not found"):
        ArmDescription.from_urdf(tmp_path / "none.urdf", "hand")
    revolute, continuous = 'name="yaw" type="revolute"', 'name="yaw" type="continuous"'
    text = arm3_urdf.read_text().replace(revolute, continuous)
    path = tmp_path / "continuous.urdf"
    path.write_text(text)
    with pytest.raises(UrdfError, match="'yaw' has type 'continuous'"):
        ArmDescription.from_urdf(path, "hand")


def test_check_positions_reports_joint(arm3_urdf):
    arm = ArmDescription.from_urdf(arm3_urdf, "hand")
    with pytest.raises(ValueError, match=r"expected shape \(3,\), found \(2,\)"):
        arm.check_positions(np.zeros(2))
    with pytest.raises(ValueError, match="'shoulder'"):
        arm.check_positions(np.array([0.0, 2.5, 0.0]))
