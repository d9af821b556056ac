"""The direct GPS loop end to end on the simulator (tiny run: contract, not learning)."""

from __future__ import annotations

import json

from mbpl_ros.cli import main
from mbpl_ros.gps.policy import load_policy


def test_mdgps_run_writes_summary_policy_and_plots(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--algorithm", "mdgps", "--task", "reach", "--conditions", "2",
                 "--samples", "2", "--iterations", "1", "--horizon", "8",
                 "--test-conditions", "2", "--policy-steps", "10", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "mdgps" and summary["gps"]["policy"] == "mlp"
    record = summary["iterations"][0]
    for key in ("mean_cost", "eval_cost", "trials", "env_steps", "wall_s", "conditions",
                "train_success_rate", "test_success_rate", "policy_cost", "test_conditions"):
        assert key in record
    assert record["trials"] == 4 and record["eval_trials"] == 4
    assert len(record["conditions"]) == 2 and len(record["test_conditions"]) == 2
    assert 0.0 <= record["test_success_rate"] <= 1.0
    for name in ("policy.pt", "controllers.npz", "training.png", "policy.png", "samples.npz"):
        assert (out / name).is_file()
    policy = load_policy(out / "policy.pt", joint_names=summary["robot"]["joints"])
    assert policy.observation.image_size is None


def _tiny_visuomotor_run(out, **camera) -> dict:
    """One MDGPS iteration of a 16x16 visuomotor policy on reach, 2 conditions x 2 samples."""
    from mbpl_ros.training.config import TrainConfig
    from mbpl_ros.training.gps_loop import GPSSettings, train

    config = TrainConfig(task="reach", algorithm="mdgps", conditions=2, samples=2, iterations=1,
                         horizon=6, out=out, progress=False)
    return train(config, GPSSettings(policy="visuomotor", image_size=(16, 16), channels=4,
                                     pretrain_images=40, pretrain_steps=20, policy_steps=5,
                                     first_policy_steps=5, pretrain_max_error_m=None,
                                     **camera))


def test_visuomotor_run_writes_a_policy_the_executor_can_check_its_camera_against(tmp_path):
    import numpy as np

    from mbpl_ros.executor.policy import recorded_camera

    out = tmp_path / "run"
    summary = _tiny_visuomotor_run(out, camera_fovy_deg=40.0, camera_supersample=2)
    assert len(summary["iterations"]) == 1
    (out / "summary.json").unlink()  # the policy file alone must say which camera it needs
    policy = load_policy(out / "policy.pt", joint_names=summary["robot"]["joints"])
    assert policy.observation.image_size == (16, 16)
    import torch

    # The head's kinematic input places the first ee point like the simulator does, and its
    # target estimate is read in the pretraining targets' units (metres, not normalised).
    from mbpl_sim import make_sim

    net = policy.network
    assert net.kinematics is not None and float(net.pose_scale.min()) < 0.5
    with make_sim("mujoco", task="reach") as sim:
        q = np.random.default_rng(0).uniform(sim.description.lower, sim.description.upper,
                                             (5, sim.description.n_joints))
        expected = []
        for x in q:
            sim.set_state(x, np.zeros_like(x))
            expected.append(sim.ee_points_world()[0])
    with torch.no_grad():
        got = net.kinematics(torch.as_tensor(q, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)

    extra = torch.load(out / "policy.pt", weights_only=True)["extra"]
    camera, source = recorded_camera(out / "policy.pt", extra, (16, 16))
    assert source == "the policy file's metadata"
    assert camera is not None and np.isclose(camera.fovy_deg, 40.0) and camera.supersample == 2


def test_a_visuomotor_run_with_a_world_camera_records_its_pose(tmp_path):
    import torch

    out = tmp_path / "run"
    summary = _tiny_visuomotor_run(out, camera_eye=(1.3, 0.0, 0.45),
                                   camera_look_at=(0.5, 0.0, 0.15))
    assert summary["gps"]["camera_eye"] == [1.3, 0.0, 0.45]
    extra = torch.load(out / "policy.pt", weights_only=True)["extra"]
    assert extra["camera_eye"] == [1.3, 0.0, 0.45]
    assert extra["camera_look_at"] == [0.5, 0.0, 0.15]


def test_best_iteration_is_chosen_on_the_training_conditions_only():
    from mbpl_ros.training.gps_loop import best_iteration

    def it(i, train, cost, test):
        return {"iteration": i, "train_success_rate": train, "policy_cost": cost,
                "test_success_rate": test}

    runs = [it(0, 0.25, 90.0, 0.9), it(1, 0.75, 50.0, 0.1), it(2, 0.75, 40.0, 0.2),
            it(3, 0.5, 10.0, 1.0)]
    # highest training success, the tie broken by the lower training cost; never by held-out
    assert best_iteration(runs) == it(2, 0.75, 40.0, 0.2)
    assert best_iteration(runs[:2]) == it(1, 0.75, 50.0, 0.1)
    assert best_iteration([it(0, 0.5, float("nan"), 0.0), it(1, 0.25, 3.0, 0.0)])["iteration"] == 1
    assert best_iteration([]) is None


def test_mdgps_run_keeps_the_policy_that_did_best_on_the_training_conditions(tmp_path):
    import torch

    from mbpl_ros.training.gps_loop import best_iteration

    out = tmp_path / "run"
    assert main(["train", "--algorithm", "mdgps", "--task", "reach", "--conditions", "2",
                 "--samples", "2", "--iterations", "3", "--horizon", "8",
                 "--policy-steps", "10", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best_policy"]
    assert best == best_iteration(summary["iterations"])
    saved = torch.load(out / "best_policy.pt", weights_only=True)
    assert saved["extra"]["iteration"] == best["iteration"]
    final = torch.load(out / "policy.pt", weights_only=True)
    assert final["extra"]["iteration"] == 2
    if best["iteration"] == 2:
        for key, value in final["state_dict"].items():
            assert torch.equal(value, saved["state_dict"][key])
    load_policy(out / "best_policy.pt", joint_names=summary["robot"]["joints"])
