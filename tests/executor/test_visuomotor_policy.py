"""A visuomotor policy file in the executor without ROS: the split evaluation (vision on frame
arrival, numpy head in the loop) against the whole torch network, frames paired by exact stamp,
a missing frame or non-finite output giving zero torque, the recorded camera, the camera model
as CameraInfo, and decoding sensor_msgs/Image fields."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from mbpl_ros.camera import CameraModel, FrameError, camera_info_fields, decode_rgb
from mbpl_ros.core.state import StateLayout
from mbpl_ros.executor import (
    ExecutorConfig,
    ExecutorCore,
    FrameFeatures,
    Mode,
    PdGains,
    PolicyActor,
    PolicyLoadError,
    SafetyFilter,
    SafetyLimits,
    StartTrial,
    StateSample,
    TrialFinished,
    TrialSpec,
    load_trial_policy,
)

torch = pytest.importorskip("torch")

from mbpl_ros.gps.networks import VisuomotorNet, VisuomotorSpec  # noqa: E402
from mbpl_ros.gps.policy import (  # noqa: E402
    Normalizer,
    ObservationSpec,
    make_policy,
    save_policy,
    to_image_tensor,
)

JOINTS = tuple(f"joint{i}" for i in range(1, 8))
LAYOUT = StateLayout(7, 1)
SIZE = (12, 16)


def visuomotor_file(path, pose_dim=6, head_points=False, seed=0, kinematic=False, **extra):
    spec = ObservationSpec.visuomotor(LAYOUT, JOINTS, SIZE)
    policy = make_policy(spec, 7, hidden=(16, 16), channels=4, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy.network = VisuomotorNet(VisuomotorSpec(
            spec.dim, 7, SIZE, 4, (16, 16), pose_dim=pose_dim, head_points=head_points,
            kinematic_joints=7 if kinematic else 0))
        if kinematic:
            # Joints about tilted axes through scattered points, one prismatic: every term of
            # the product of exponentials is exercised.
            rng = np.random.default_rng(seed + 5)
            w = rng.standard_normal((7, 3))
            w /= np.linalg.norm(w, axis=1, keepdims=True)
            v = -np.cross(w, rng.uniform(-0.5, 0.5, (7, 3)))
            w[3], v[3] = 0.0, (0.0, 0.6, 0.8)
            home = np.eye(4)
            home[:3, 3] = (0.4, 0.1, 0.3)
            policy.network.kinematics.set_chain(np.c_[v, w], rng.permutation(7),
                                                rng.uniform(-1, 1, 7), home, (0.0, 0.0, 0.1))
            policy.network.set_pose_units(rng.uniform(-0.3, 0.3, 6), rng.uniform(0.1, 0.3, 6))
        # Standardised feature points: a random network then responds to the image, not only
        # to x (standardising keeps what the pose layer computed: new pose weights too).
        vision = policy.network.vision
        vision.standardize_points(to_image_tensor(images(64, seed=9)))
        if vision.pose_layer is not None:
            torch.nn.init.normal_(vision.pose_layer.weight, std=0.5)
    rng = np.random.default_rng(seed)
    policy.obs_norm = Normalizer(0.1 * rng.standard_normal(spec.dim),
                                 rng.uniform(0.5, 2.0, spec.dim))
    policy.action_norm = Normalizer(0.2 * rng.standard_normal(7), np.full(7, 3.0))
    policy.variance = rng.uniform(0.1, 0.5, 7)
    save_policy(policy, path, dt=0.05, **extra)
    return policy


def images(n, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, *SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("pose_dim, head_points, kinematic",
                         [(6, False, False), (0, True, False), (6, True, False), (6, False, True)])
def test_vision_on_arrival_and_numpy_head_match_the_whole_network(tmp_path, pose_dim,
                                                                   head_points, kinematic):
    reference = visuomotor_file(tmp_path / "vm.pt", pose_dim, head_points, kinematic=kinematic)
    loaded = load_trial_policy(tmp_path / "vm.pt", JOINTS, LAYOUT.names())
    assert loaded.is_visuomotor and loaded.image_size == SIZE
    assert loaded.evaluator == "numpy head" and loaded.camera is None
    T = 10
    X = np.random.default_rng(2).standard_normal((T, LAYOUT.dim))
    frames = images(T)
    noise = np.random.default_rng(3).standard_normal((T, 7))
    feed = FrameFeatures(loaded)
    stamps = [50_000_000 * t for t in range(T)]
    for stamp, image in zip(stamps, frames, strict=True):
        feed.add(stamp, image)
    actor = PolicyActor(loaded, T, noise, feed)
    actions = np.stack([actor.act_at(t, X[t], stamps[t]) for t in range(T)])
    obs = X[:, :14]
    expected = reference.mean_actions(obs, frames) + np.sqrt(reference.variance) * noise
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert actor.faults == 0 and not actor.missing_frame and len(actor.step_s) == T
    # The image matters: the same state with another frame gives another action.
    assert np.abs(reference.mean_actions(obs[0], frames[1])
                  - reference.mean_actions(obs[0], frames[0])).max() > 1e-2
    # The policy's own guarded call, as gps_loop's direct rollouts use it, agrees.
    np.testing.assert_allclose(actions[4], reference.act(obs[4], frames[4], noise[4]).u,
                               atol=1e-5)


def test_a_step_without_its_frame_gets_zero_torque_and_names_the_step(tmp_path):
    visuomotor_file(tmp_path / "vm.pt")
    loaded = load_trial_policy(tmp_path / "vm.pt", JOINTS, LAYOUT.names())
    feed = FrameFeatures(loaded)
    frames = images(2)
    feed.add(0, frames[0])
    feed.add(50_000_000, frames[1])
    actor = PolicyActor(loaded, 5, frames=feed)
    x = np.zeros(LAYOUT.dim)
    assert np.any(actor.act_at(0, x, 0) != 0)
    # An older frame is never used for a newer state: exact stamps only.
    np.testing.assert_array_equal(actor.act_at(2, x, 100_000_000), np.zeros(7))
    assert actor.faults == 1 and actor.missing_frame.startswith("step 2: no camera frame")
    np.testing.assert_array_equal(actor.act(3, x), np.zeros(7))  # no stamp, no frame
    # A non-finite observation is zeroed and counted like the MLP's.
    x[3] = np.nan
    np.testing.assert_array_equal(actor.act_at(1, x, 50_000_000), np.zeros(7))
    assert actor.faults == 3 and actor.last_fault == "non-finite observation"
    # A frame stamped before the newest one starts a new episode: the old frames are dropped.
    feed.add(0, frames[1])
    assert feed.get(50_000_000) is None and feed.has(0)
    with pytest.raises(ValueError, match="expected \\(12, 16, 3\\)"):
        feed.add(1, np.zeros((16, 12, 3), dtype=np.uint8))


def test_non_finite_network_output_is_zeroed_and_counted_by_the_trial(tmp_path):
    policy = visuomotor_file(tmp_path / "vm.pt")
    with torch.no_grad():
        policy.network.head[-1].bias[2] = float("inf")
    save_policy(policy, tmp_path / "inf.pt", dt=0.05)
    # refused at load (non-finite parameters) ...
    with pytest.raises(PolicyLoadError, match="non-finite values"):
        load_trial_policy(tmp_path / "inf.pt", JOINTS, LAYOUT.names())
    # ... and a non-finite output at run time (here: a head that gives NaN for q_0 > 1) is
    # zeroed in the trial and counted.
    loaded = load_trial_policy(tmp_path / "vm.pt", JOINTS, LAYOUT.names())
    head = loaded.mean_action
    loaded = replace(loaded, mean_action=lambda obs, f: head(obs, f) * (np.nan if obs[0] > 1
                                                                         else 1.0))
    feed = FrameFeatures(loaded)
    T = 3
    for t, image in enumerate(images(T + 1)):
        feed.add(t * 10_000_000, image)
    actor = PolicyActor(loaded, T, frames=feed)
    n = 7
    limits = SafetyLimits(effort=np.full(n, 50.0), lower=np.full(n, -3.0),
                          upper=np.full(n, 3.0), margin=0.0, limit_damping=np.zeros(n))
    core = ExecutorCore(ExecutorConfig(gains=PdGains(np.full(n, 4.0), np.full(n, 1.0)),
                                       lockstep=True), SafetyFilter(limits), Mode.HOLD)
    core.submit(StartTrial(1, TrialSpec(actor, T, 0.01, 1, 0, "vm")))
    sent = []
    for t in range(T + 1):
        x = np.full(LAYOUT.dim, 0.1)
        if t == 1:
            x[0] = 2.0
        sample = StateSample(0.0, t * 0.01, np.zeros(n), np.zeros(n), x, None, t * 10_000_000)
        command = core.step(t * 0.01, sample)
        if command is not None:
            sent.append(command)
    (finished,) = [e for e in core.events if isinstance(e, TrialFinished)]
    result = finished.result
    assert not result.aborted and result.policy_faults == 1, result.reason
    assert np.all(np.isfinite(sent)) and np.all(result.actions[1] == 0)
    assert np.any(result.actions[0] != 0) and np.any(result.actions[2] != 0)


def test_the_camera_is_read_from_the_file_or_the_runs_summary(tmp_path):
    visuomotor_file(tmp_path / "a.pt", camera_fovy_deg=35.0, camera_supersample=2)
    loaded = load_trial_policy(tmp_path / "a.pt", JOINTS, LAYOUT.names())
    assert loaded.camera == CameraModel(*SIZE, 35.0, 2)
    assert loaded.camera_source == "the policy file's metadata"
    run = tmp_path / "run"
    run.mkdir()
    visuomotor_file(run / "policy.pt")
    gps = {"policy": "visuomotor", "image_size": list(SIZE), "camera_fovy_deg": 40.0,
           "camera_supersample": 3}
    (run / "summary.json").write_text(json.dumps({"gps": gps}))
    loaded = load_trial_policy(run / "policy.pt", JOINTS, LAYOUT.names())
    assert loaded.camera == CameraModel(*SIZE, 40.0, 3)
    assert loaded.camera_source.endswith("summary.json")
    gps["image_size"] = [32, 32]
    (run / "summary.json").write_text(json.dumps({"gps": gps}))
    with pytest.raises(PolicyLoadError, match="describes a visuomotor policy with \\[32, 32\\]"):
        load_trial_policy(run / "policy.pt", JOINTS, LAYOUT.names())


def test_camera_model_round_trips_through_camera_info_fields():
    camera = CameraModel(32, 48, 35.0, 2)
    info = camera_info_fields(camera)
    assert (info["height"], info["width"], info["binning_x"]) == (64, 96, 2)
    back = CameraModel.from_camera_info(info["height"], info["width"], info["k"],
                                        info["binning_x"], info["binning_y"])
    assert back.image_size == (32, 48) and back.supersample == 2
    assert abs(back.fovy_deg - 35.0) < 1e-9 and not camera.mismatch(back)
    assert camera.mismatch(CameraModel(32, 32, 55.0, 1)) == ["image size", "field of view",
                                                            "supersample"]


def test_decode_rgb_reads_the_image_fields_and_refuses_what_it_cannot():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    padded = np.zeros((3, 16), dtype=np.uint8)  # step 16 > 4 px x 3 B
    padded[:, :12] = rgb.reshape(3, 12)
    np.testing.assert_array_equal(decode_rgb(3, 4, "rgb8", 16, padded.tobytes()), rgb)
    np.testing.assert_array_equal(decode_rgb(3, 4, "bgr8", 12, rgb[..., ::-1].tobytes()), rgb)
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(decode_rgb(3, 4, "rgba8", 16, list(rgba.ravel())), rgb)
    with pytest.raises(FrameError, match="frame of 3x4 px .* expects 32x32"):
        decode_rgb(3, 4, "rgb8", 12, rgb.tobytes(), expected=(32, 32))
    with pytest.raises(FrameError, match="encoding 'mono8'"):
        decode_rgb(3, 4, "mono8", 4, bytes(12))
    with pytest.raises(FrameError, match="expected 36 B"):
        decode_rgb(3, 4, "rgb8", 12, bytes(30))


def test_a_policy_trained_with_a_world_camera_pose_is_refused(tmp_path):
    visuomotor_file(tmp_path / "vm.pt", camera_fovy_deg=35.0, camera_supersample=2,
                    camera_eye=[1.3, 0.0, 0.45], camera_look_at=[0.5, 0.0, 0.15])
    with pytest.raises(PolicyLoadError, match="world camera"):
        load_trial_policy(tmp_path / "vm.pt", JOINTS, LAYOUT.names())
