"""Networks, the supervised step, the guarded act(), checkpoints, distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbpl_ros.core.errors import CheckpointError, NonFiniteError, ShapeError
from mbpl_ros.core.state import StateLayout
from mbpl_ros.gps.distill import distill
from mbpl_ros.gps.networks import SpatialSoftmax
from mbpl_ros.gps.policy import ObservationSpec, load_policy, make_policy, save_policy
from mbpl_ros.gps.policy_opt import (
    PolicyOptConfig,
    PolicyOptimizer,
    PolicyTargets,
    fit_policy_variance,
)

LAYOUT = StateLayout(n_joints=2, n_points=1)
JOINTS = ("shoulder", "elbow")


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, LAYOUT.dim))
    W = rng.standard_normal((2, LAYOUT.dim))
    mu = np.tanh(X @ W.T) * 5.0
    prc = np.tile(np.diag([4.0, 0.25]), (n, 1, 1))
    return PolicyTargets(X, mu, prc, rng.uniform(0.5, 1.5, n))


def test_spatial_softmax_matches_a_hand_computed_case():
    # 2x2 map: pixel centres x, y in {-0.5, 0.5}; logits give p = [1, 3, 1, 1] / 6 (row-major).
    f = torch.tensor([[[[0.0, math.log(3.0)], [0.0, 0.0]]]])
    out = SpatialSoftmax(2, 2, learn_temperature=False)(f)
    assert out.shape == (1, 2)
    expected_x = (-0.5 * 1 + 0.5 * 3 - 0.5 * 1 + 0.5 * 1) / 6
    expected_y = (-0.5 * (1 + 3) + 0.5 * (1 + 1)) / 6
    np.testing.assert_allclose(out.numpy()[0], [expected_x, expected_y], atol=1e-6)
    # A sharp peak at row 2, column 0 of a 3x4 map sits on that pixel centre.
    g = torch.full((1, 2, 3, 4), -50.0)
    g[0, 0, 2, 0] = 50.0
    g[0, 1, 0, 3] = 50.0
    pts = SpatialSoftmax(3, 4)(g).detach().numpy()[0]
    np.testing.assert_allclose(pts, [-0.75, 2 / 3, 0.75, -2 / 3], atol=1e-5)


def test_supervised_step_reduces_the_precision_weighted_loss_and_is_seeded():
    data = _data()
    spec = ObservationSpec.full_state(LAYOUT, JOINTS)
    params = []
    for _ in range(2):
        policy = make_policy(spec, 2, hidden=(32,), seed=3)
        opt = PolicyOptimizer(policy, PolicyOptConfig(steps=120, batch_size=64, seed=5))
        report = opt.update(data)
        assert report.loss_after < 0.5 * report.loss_before
        params.append(torch.cat([p.detach().ravel() for p in policy.network.parameters()]))
    assert torch.equal(params[0], params[1])  # one seed, one result
    # The policy covariance is the inverse of the weighted mean precision's diagonal.
    np.testing.assert_allclose(policy.variance, [0.25, 4.0])
    np.testing.assert_allclose(fit_policy_variance(data.precision, data.weight, 0.5),
                               [1 / 5.0, 1 / 1.25])


def test_precision_weighting_fits_the_certain_action_better():
    data = _data(seed=1)
    policy = make_policy(ObservationSpec.full_state(LAYOUT, JOINTS), 2, hidden=(8,), seed=0)
    PolicyOptimizer(policy, PolicyOptConfig(steps=200, batch_size=64)).update(data)
    err = np.sqrt(np.mean((policy.mean_actions(data.obs) - data.mu) ** 2, axis=0))
    assert err[0] < err[1]  # precision 4 vs 0.25


def test_non_finite_values_never_reach_the_robot():
    policy = make_policy(ObservationSpec.full_state(LAYOUT, JOINTS), 2, seed=0)
    ok = policy.act(np.zeros(LAYOUT.dim))
    assert ok.valid and np.all(np.isfinite(ok.u))
    bad_in = policy.act(np.full(LAYOUT.dim, np.nan))
    assert not bad_in.valid and np.array_equal(bad_in.u, np.zeros(2))
    assert "observation" in bad_in.reason
    with torch.no_grad():
        policy.network.body[-1].bias[0] = float("inf")
    bad_out = policy.act(np.zeros(LAYOUT.dim))
    assert not bad_out.valid and np.array_equal(bad_out.u, np.zeros(2))
    assert "network output" in bad_out.reason and policy.faults == 2
    with pytest.raises(NonFiniteError):
        policy.act_strict(np.zeros(LAYOUT.dim))
    with pytest.raises(ShapeError):
        policy.act(np.zeros(3))


def test_checkpoint_round_trip_and_mismatched_files_are_refused(tmp_path):
    policy = make_policy(ObservationSpec.full_state(LAYOUT, JOINTS), 2, seed=0)
    PolicyOptimizer(policy, PolicyOptConfig(steps=20)).update(_data(100))
    path = save_policy(policy, tmp_path / "policy.pt", task="reach")
    loaded = load_policy(path, JOINTS, LAYOUT.names(), None)
    x = np.random.default_rng(0).standard_normal(LAYOUT.dim)
    np.testing.assert_allclose(loaded.act(x).u, policy.act(x).u, rtol=1e-6)
    np.testing.assert_allclose(loaded.variance, policy.variance)

    with pytest.raises(CheckpointError, match="trained for joints"):
        load_policy(path, joint_names=[f"joint{i}" for i in range(7)])
    with pytest.raises(CheckpointError, match="state entries"):
        load_policy(path, state_names=StateLayout(2, 2).names())
    with pytest.raises(CheckpointError, match="camera images"):
        load_policy(path, image_size=(64, 64))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_policy(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected format"):
        load_policy(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "missing.pt")


def test_visuomotor_policy_reads_image_and_joint_state_only(tmp_path):
    spec = ObservationSpec.visuomotor(LAYOUT, JOINTS, (32, 32))
    assert spec.state_names == ("q0", "q1", "qd0", "qd1")
    policy = make_policy(spec, 2, hidden=(16,), channels=4, seed=0)
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a = policy.act(np.zeros(4), img)
    assert a.valid and a.u.shape == (2,)
    with pytest.raises(ShapeError):
        policy.act(np.zeros(4), None)
    save_policy(policy, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="camera images"):
        load_policy(tmp_path / "v.pt", image_size=(64, 64))
    np.testing.assert_allclose(load_policy(tmp_path / "v.pt", image_size=(32, 32)).act(
        np.zeros(4), img).u, a.u, rtol=1e-5)


def test_distillation_matches_each_teacher_and_temperature_softens():
    spec = ObservationSpec.full_state(LAYOUT, JOINTS)
    rng = np.random.default_rng(0)
    teachers, data = [], []
    for i in range(2):
        t = make_policy(spec, 2, hidden=(16,), seed=i)
        PolicyOptimizer(t, PolicyOptConfig(steps=50)).update(_data(200, seed=i))
        t.variance = np.array([0.1, 0.2])
        teachers.append(t)
        data.append(rng.standard_normal((300, LAYOUT.dim)) + 3.0 * i)  # two tasks' regions
    student, report = distill(teachers, data, temperature=1.0, steps=600, hidden=(32, 32),
                              learning_rate=3e-3)
    assert report.loss_after < 0.2 * report.loss_before
    scale = [np.std(t.mean_actions(d)) for t, d in zip(teachers, data, strict=True)]
    assert all(e < 0.3 * s for e, s in zip(report.mean_error, scale, strict=True))
    hot, _ = distill(teachers, data, temperature=4.0, steps=600, hidden=(32, 32),
                     learning_rate=3e-3)
    assert np.all(hot.variance > 2.0 * student.variance)
