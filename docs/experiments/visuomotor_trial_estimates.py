"""Where a trained visuomotor reach policy thinks the target is during its held-out trials.

    .venv/bin/python docs/experiments/visuomotor_trial_estimates.py RUN_DIR SEED [stand|ball]

RUN_DIR holds the `policy.pt` of the README's visuomotor command run with `--seed SEED` (its
held-out targets are drawn again from the seed). For each held-out target: the final distance of
the noiseless trial, the pose layer's target estimate error over the first 5 and the last 10
steps (and its mean vector at the end), and the final distance when the head is handed the true
target instead of the estimate ("oracle"). ``ball``: the scene without the target's stand, for
runs made before it (2026-11-30).
"""

import sys
from pathlib import Path

import numpy as np
import torch

from mbpl_ros.gps.policy import load_policy
from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.direct import make_problem
from mbpl_ros.training.gps_loop import GPSSettings, policy_rollout, test_condition_table
from mbpl_sim import TaskSpec, make_sim

run, seed = Path(sys.argv[1]), int(sys.argv[2])
task = TaskSpec.reach(stand=None) if sys.argv[3:] == ["ball"] else TaskSpec.reach()
torch.set_num_threads(1)
settings = GPSSettings(policy="visuomotor", test_conditions=10)
config = TrainConfig(task="reach", algorithm="mdgps", seed=seed, conditions=8, samples=5,
                     horizon=100, out=run, progress=False)
sim = make_sim(config.backend, task=task, camera_fovy_deg=settings.camera_fovy_deg,
               camera_supersample=settings.camera_supersample)
problem = make_problem(config, np.random.default_rng(seed), sim)
tests = test_condition_table(config, settings, sim, problem.conditions)
policy = load_policy(run / "policy.pt")
net = policy.network
features = net.features
pose_dim = net.spec.pose_dim
estimates: list[np.ndarray] = []
oracle: dict[str, torch.Tensor | None] = {"target": None}


def features_with_log(image: torch.Tensor) -> torch.Tensor:
    """The network's image features; records the target estimate (m) and, in oracle mode,
    replaces it with the true target."""
    f = features(image)
    estimate = f[:, -pose_dim:][:, :3] * net.pose_scale[:3] + net.pose_mean[:3]
    estimates.append(estimate[0].numpy().copy())
    if oracle["target"] is not None:
        f = f.clone()
        f[:, -pose_dim:-pose_dim + 3] = (oracle["target"] - net.pose_mean[:3]) / net.pose_scale[:3]
    return f


net.features = features_with_log
finals = []
for j, condition in enumerate(tests):
    target = np.asarray(condition.target_position)
    estimates.clear()
    oracle["target"] = None
    with torch.no_grad():
        trial = policy_rollout(sim, problem.builder, condition, policy, config.horizon, config.dt)
    error = np.array(estimates) - target
    estimates.clear()
    oracle["target"] = torch.as_tensor(target, dtype=torch.float32)
    with torch.no_grad():
        helped = policy_rollout(sim, problem.builder, condition, policy, config.horizon,
                                config.dt)
    finals.append((trial.success, helped.success))
    print(f"held-out {j}: final {trial.final_distance * 100:5.1f} cm "
          f"({'ok' if trial.success else 'FAIL'}); estimate error first steps "
          f"{np.linalg.norm(error[:5], axis=1).mean() * 100:4.1f} cm, last steps "
          f"{np.linalg.norm(error[-10:], axis=1).mean() * 100:4.1f} cm (mean "
          f"{np.round(error[-10:].mean(axis=0) * 100, 1)} cm); oracle final "
          f"{helped.final_distance * 100:5.1f} cm ({'ok' if helped.success else 'FAIL'})",
          flush=True)
finals = np.array(finals)
print(f"held-out success {finals[:, 0].mean():.0%}, with the true target {finals[:, 1].mean():.0%}")
sim.close()
