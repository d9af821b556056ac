"""Visuomotor network pieces: pose layer and point standardisation, frozen vision in the S-step,
vision pretraining on a synthetic scene, supersampled camera images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpl_ros.core.state import StateLayout
from mbpl_ros.gps.networks import VisionLayers, VisuomotorNet, VisuomotorSpec
from mbpl_ros.gps.policy import GaussianPolicy, Normalizer, ObservationSpec, to_image_tensor
from mbpl_ros.gps.policy_opt import PolicyOptConfig, PolicyOptimizer, PolicyTargets
from mbpl_ros.gps.vision import pretrain_vision


def _square_images(rng: np.random.Generator, n: int, size: int = 16) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Grey images with one 2x2 red square at a random place; its centre in pixels (n, 2)."""
    images = np.full((n, size, size, 3), 120, dtype=np.uint8)
    centre = np.empty((n, 2))
    for i in range(n):
        r, c = rng.integers(0, size - 1, 2)
        images[i, r:r + 2, c:c + 2] = (230, 25, 25)
        centre[i] = (c + 1.0, r + 1.0)
    return images, centre


def test_standardize_points_keeps_the_pose_layer_output():
    torch.manual_seed(0)
    vision = VisionLayers((16, 16), 4, pose_dim=3)
    images = to_image_tensor(_square_images(np.random.default_rng(0), 64)[0])
    with torch.no_grad():
        before = vision.pose(vision(images))
    # Untrained convolutions move the points by ~1e-4; no floor here, to check the arithmetic.
    vision.standardize_points(images, floor=1e-9)
    with torch.no_grad():
        points = vision(images)
        after = vision.pose(points)
    torch.testing.assert_close(after, before, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(points.mean(dim=0), torch.zeros(8), atol=1e-3, rtol=0)
    torch.testing.assert_close(points.std(dim=0), torch.ones(8), atol=1e-2, rtol=0)


def test_spec_refuses_a_head_without_inputs_from_vision():
    with pytest.raises(ValueError, match="pose_dim"):
        VisuomotorSpec(4, 2, pose_dim=0, head_points=False)


def test_frozen_vision_is_left_alone_by_the_policy_optimizer():
    torch.manual_seed(1)
    layout = StateLayout(n_joints=2, n_points=1)
    obs_spec = ObservationSpec.visuomotor(layout, ("a", "b"), (16, 16))
    net = VisuomotorNet(VisuomotorSpec(obs_spec.dim, 2, (16, 16), 4, (16,), pose_dim=3,
                                       head_points=False))
    net.vision.freeze()
    assert net.vision.frozen
    policy = GaussianPolicy(net, obs_spec, Normalizer.identity(4), Normalizer.identity(2),
                            np.ones(2))
    rng = np.random.default_rng(1)
    images, centre = _square_images(rng, 96)
    obs = rng.standard_normal((96, 4))
    data = PolicyTargets(obs, np.c_[centre[:, 0] / 8 - 1, obs[:, 0]],
                         np.broadcast_to(np.eye(2), (96, 2, 2)).copy(), np.ones(96), images)
    vision_before = {k: v.clone() for k, v in net.vision.state_dict().items()}
    head_before = [p.clone() for p in net.head.parameters()]
    report = PolicyOptimizer(policy, PolicyOptConfig(steps=30, batch_size=32)).update(data)
    for k, v in net.vision.state_dict().items():
        torch.testing.assert_close(v, vision_before[k], atol=0, rtol=0)
    assert any(not torch.equal(a, b) for a, b in zip(head_before, net.head.parameters(),
                                                      strict=True))
    assert report.loss_after < report.loss_before


def test_pretraining_locates_a_small_object():
    """A 2x2 square in a 16x16 image: the pose layer must find it to well under a pixel's
    worth of the image in held-out images (a regressor of the mean is off by ~4.5 pixels)."""
    torch.manual_seed(2)
    vision = VisionLayers((16, 16), 4, pose_dim=2)
    images, centre = _square_images(np.random.default_rng(2), 400)
    report = pretrain_vision(vision, images, centre, steps=400, batch_size=32,
                             learning_rate=1e-2, seed=2, holdout=0.2)
    assert report.holdout_rmse is not None and report.holdout_rmse < 1.5, report
    assert report.losses[-1] < 0.5 * report.losses[0]
    # The read-out is the network's own pose layer, in the targets' normalised units.
    with torch.no_grad():
        pred = vision.pose(vision(to_image_tensor(images[-80:]))).numpy()
    mean, std = centre[:320].mean(axis=0), centre[:320].std(axis=0)
    err = pred * std + mean - centre[-80:]
    assert np.sqrt(np.mean(np.sum(err ** 2, axis=1))) == pytest.approx(report.holdout_rmse,
                                                                       rel=1e-3)


@pytest.mark.parametrize("backend", ["mujoco", "pybullet"])
def test_supersampled_camera_averages_the_larger_image(backend):
    from mbpl_sim import make_sim
    from mbpl_sim.tasks import make_conditions

    with make_sim(backend, camera_supersample=2) as sim, make_sim(backend) as plain:
        condition = make_conditions(sim.task, sim.description, 1, np.random.default_rng(3))[0]
        sim.reset(condition)
        plain.reset(condition)
        small = sim.render(16, 12)
        large = plain.render(32, 24).astype(float)
        assert small.shape == (12, 16, 3) and small.dtype == np.uint8
        expected = large.reshape(12, 2, 16, 2, 3).mean(axis=(1, 3))
        assert np.abs(small - expected).max() <= 0.5 + 1e-9
        with pytest.raises(ValueError, match=r"width: expected an integer in \[1, 512\]"):
            sim.render(600, 10)
    with pytest.raises(ValueError, match="camera_supersample"):
        make_sim(backend, camera_supersample=0)


def test_frozen_vision_remembers_points_per_image_and_forgets_on_new_weights():
    torch.manual_seed(4)
    vision = VisionLayers((16, 16), 4, pose_dim=2)
    raw = _square_images(np.random.default_rng(4), 20)[0]
    distinct = len(np.unique(raw.reshape(20, -1), axis=0))
    distinct_12 = len(np.unique(raw[:12].reshape(12, -1), axis=0))
    images = to_image_tensor(raw)
    with torch.no_grad():
        fresh = vision(images)
    assert not vision._cache  # only a frozen network remembers
    vision.freeze()
    first = vision(images[:12])
    assert len(vision._cache) == distinct_12
    again = vision(images)  # the first 12 remembered, the rest new, in the caller's order
    assert len(vision._cache) == distinct
    torch.testing.assert_close(first, fresh[:12])
    torch.testing.assert_close(again, fresh)
    other = VisionLayers((16, 16), 4, pose_dim=2)
    vision.load_state_dict(other.state_dict())
    assert not vision._cache
    with torch.no_grad():
        torch.testing.assert_close(vision(images), other(images))


_INERTIA = 'ixy="0" ixz="0" iyz="0"'
_PLANAR_URDF = f"""<?xml version="1.0"?>
<robot name="planar">
  <link name="base"/>
  <link name="l1"><inertial><mass value="1"/>
    <inertia ixx="0.01" iyy="0.01" izz="0.01" {_INERTIA}/></inertial></link>
  <link name="l2"><inertial><mass value="1"/>
    <inertia ixx="0.01" iyy="0.01" izz="0.01" {_INERTIA}/></inertial></link>
  <link name="tip"><inertial><mass value="0.1"/>
    <inertia ixx="0.001" iyy="0.001" izz="0.001" {_INERTIA}/></inertial></link>
  <joint name="shoulder" type="revolute"><parent link="base"/><child link="l1"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 0 1"/>
    <limit lower="-3" upper="3" effort="10" velocity="5"/></joint>
  <joint name="elbow" type="revolute"><parent link="l1"/><child link="l2"/>
    <origin xyz="0.3 0 0"/><axis xyz="0 0 1"/>
    <limit lower="-3" upper="3" effort="10" velocity="5"/></joint>
  <joint name="slide" type="prismatic"><parent link="l2"/><child link="tip"/>
    <origin xyz="0.2 0 0"/><axis xyz="1 0 0"/>
    <limit lower="0" upper="0.2" effort="10" velocity="1"/></joint>
</robot>
"""


def _planar_tip(shoulder: float, elbow: float, slide: float) -> np.ndarray:
    """Closed form: the point (0, 0.05, 0) of the tip link of _PLANAR_URDF, world frame."""
    a, b = shoulder, shoulder + elbow
    reach = 0.2 + slide
    return np.array([0.3 * np.cos(a) + reach * np.cos(b) - 0.05 * np.sin(b),
                     0.3 * np.sin(a) + reach * np.sin(b) + 0.05 * np.cos(b), 0.1])


def test_screw_chain_matches_the_closed_form_of_a_planar_arm(tmp_path):
    """Product of exponentials from the URDF model (revolute and prismatic joints, the policy's
    joint order differing from the chain's, a home configuration other than zero) against the
    planar arm's closed-form forward kinematics."""
    from mbpl_ros.gps.networks import ChainKinematics
    from mbpl_ros.kinematics import ArmKinematics

    urdf = tmp_path / "planar.urdf"
    urdf.write_text(_PLANAR_URDF)
    names = ("slide", "shoulder", "elbow")  # not the chain's order
    kin = ArmKinematics(urdf, "tip", np.array([[0.0, 0.05, 0.0], [0.0, 0.0, 0.0]]), names)
    rng = np.random.default_rng(5)
    q = np.c_[rng.uniform(0.0, 0.2, 20), rng.uniform(-3, 3, (20, 2))]   # slide, shoulder, elbow
    expected = np.stack([_planar_tip(s, e, d) for d, s, e in q])
    for home in (None, np.array([0.1, 0.7, -1.2])):
        fk = ChainKinematics(3)
        fk.set_chain(*kin.screw_chain(home))
        got = fk(torch.as_tensor(q, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_screw_chain_of_the_arm_matches_its_urdf_kinematics():
    from mbpl_ros.gps.networks import ChainKinematics
    from mbpl_ros.kinematics import ArmKinematics
    from mbpl_sim import DEFAULT_EE_LINK, default_urdf
    from mbpl_sim.tasks import DEFAULT_EE_POINTS_LOCAL

    kin = ArmKinematics(default_urdf(), DEFAULT_EE_LINK, DEFAULT_EE_POINTS_LOCAL)
    fk = ChainKinematics(kin.n_joints)
    fk.set_chain(*kin.screw_chain())
    q = np.random.default_rng(6).uniform(kin.lower, kin.upper, (30, kin.n_joints))
    got = fk(torch.as_tensor(q, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, [kin.ee_points(x)[0] for x in q], atol=1e-5)
    with pytest.raises(ValueError, match="unit"):
        fk.set_chain(np.ones((kin.n_joints, 6)), *kin.screw_chain()[1:])


def test_kinematic_input_is_the_target_estimate_minus_the_end_effector():
    """The head's three extra inputs: (pose layer target in metres - FK ee) / kinematic_scale;
    checked by replacing the head with one that reads them out."""
    from mbpl_ros.gps.networks import ChainKinematics

    torch.manual_seed(7)
    spec = VisuomotorSpec(4, 3, (16, 16), 4, (8,), pose_dim=6, head_points=False,
                          kinematic_joints=2, kinematic_scale=0.1)
    net = VisuomotorNet(spec)
    # Two revolute joints about z through the origin and (0.5, 0, 0); point (1, 0, 0) at home.
    net.kinematics.set_chain([[0, 0, 0, 0, 0, 1], [0, -0.5, 0, 0, 0, 1]], [0, 1], [0, 0],
                             np.eye(4), [1.0, 0.0, 0.0])
    net.set_pose_units(np.arange(6) * 0.1, np.full(6, 2.0))
    width = 6 + 3 + 4
    probe = torch.nn.Linear(width, 3)
    with torch.no_grad():
        probe.weight.zero_()
        probe.bias.zero_()
        probe.weight[:, 6:9] = torch.eye(3)
    net.head = probe
    images = to_image_tensor(_square_images(np.random.default_rng(7), 5)[0])
    q = torch.tensor([[0.0, 0.0, 9.0, 9.0], [np.pi / 2, -np.pi / 2, 0.0, 0.0]] * 2
                     + [[np.pi, 0.0, 0.0, 0.0]])
    with torch.no_grad():
        out = net(torch.zeros(5, 4), images, q)
        pose = net.vision.pose(net.vision(images))
    target = pose[:, :3] * 2.0 + torch.tensor([0.0, 0.1, 0.2])
    ee = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]] * 2 + [[-1.0, 0.0, 0.0]])
    torch.testing.assert_close(out, (target - ee) / 0.1, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="raw observation"):
        net(torch.zeros(5, 4), images)
    assert isinstance(net.kinematics, ChainKinematics)


def test_pretraining_starts_again_from_new_seeds_until_the_error_bound():
    """Each attempt is a fresh network from its own seed; the first one within the bound is
    kept, and none within it stops the run with every attempt's error."""
    from mbpl_ros.gps.vision import PretrainingError
    from mbpl_ros.training.gps_loop import PRETRAIN_RESEED, GPSSettings, pretrain_until_located

    images, centre = _square_images(np.random.default_rng(4), 200)
    made: dict[int, VisuomotorNet] = {}

    def make(seed: int) -> VisuomotorNet:
        torch.manual_seed(seed)
        made[seed] = VisuomotorNet(VisuomotorSpec(4, 2, (16, 16), 4, (16,), pose_dim=2,
                                                  head_points=False))
        return made[seed]

    def settings(bound: float | None) -> GPSSettings:
        return GPSSettings(policy="visuomotor", pretrain_steps=60, pretrain_attempts=3,
                           pretrain_max_error_m=bound)

    seeds = [5 + k * PRETRAIN_RESEED for k in range(3)]
    lines: list[str] = []
    with pytest.raises(PretrainingError, match="in 3 attempts") as failure:
        pretrain_until_located(make, images, centre, settings(1e-6), 5, lines.append)
    errors = failure.value.errors
    assert sorted(made) == seeds and len(errors) == 3 and len(lines) == 3
    assert len(set(errors)) == 3  # different initialisations, different results

    best = int(np.argmin(errors))
    made.clear()
    net, report, got = pretrain_until_located(make, images, centre, settings(errors[best]), 5,
                                              lines.append)
    assert got == list(errors[:best + 1]) and net is made[seeds[best]]
    assert report.holdout_rmse == errors[best]

    made.clear()
    net, _, got = pretrain_until_located(make, images, centre, settings(None), 5, lines.append)
    assert len(got) == 1 and net is made[seeds[0]]
