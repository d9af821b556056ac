"""`mbpl bench policy`: CPU inference time of the global policies and the time of a GPS iteration.

- mlp_infer_ms: one :meth:`~mbpl_ros.gps.policy.GaussianPolicy.act` of the state-based MLP
  (default robot: dX = 26 observations, 2 x 64 hidden, dU = 7), median over calls.
- visuomotor_infer_ms: the same for the visuomotor network as ``mbpl train --policy
  visuomotor`` builds it (GPSSettings defaults: 32x32 RGB image, 32 conv channels, pose layer)
  plus q, qd; ``visuomotor_image_size`` says which image.
- train_s_per_iteration: one MDGPS iteration (dynamics fit with the GMM prior, policy
  linearisation with the GMM policy prior, C-step, S-step of 300 minibatch steps) with the MLP,
  4 conditions x 5 trials x T = 100 on the arm-like linear stand-in
  (:func:`~mbpl_ros.core.synthetic.arm_like_system`); the second iteration is timed (the first
  one trains the policy from scratch). Simulator time is not included.
- visuomotor_train_s_per_iteration: the same iteration with the visuomotor policy (pretrained
  vision frozen, as in training) on random images of the default size, one per sample state;
  ``visuomotor_policy_s`` is its S-step part. Rendering is not included.

torch runs on one thread (see GPSSettings.threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mbpl_ros.core.controllers import init_lqr
from mbpl_ros.core.costs import reach_cost
from mbpl_ros.core.state import StateLayout
from mbpl_ros.core.synthetic import arm_like_system, collect
from mbpl_ros.gps.algorithm import MDGPS, GPSConfig, Observations
from mbpl_ros.gps.policy import ObservationSpec, make_policy
from mbpl_ros.training.gps_loop import GPSSettings, visuomotor_network


def _infer_ms(policy, obs, image, calls: int) -> float:
    policy.act(obs, image)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        policy.act(obs, image)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="mbpl bench policy")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=2,
                        help="MDGPS iterations run; the last one is timed (>= 2)")
    args = parser.parse_args(argv or [])
    torch.set_num_threads(1)
    layout = StateLayout()
    joints = tuple(f"joint{i + 1}" for i in range(layout.n_joints))
    rng = np.random.default_rng(0)

    mlp = make_policy(ObservationSpec.full_state(layout, joints), layout.action_dim)
    mlp_ms = _infer_ms(mlp, rng.standard_normal(layout.dim), None, args.calls)
    settings = GPSSettings(policy="visuomotor")
    size = settings.image_size
    vis_spec = ObservationSpec.visuomotor(layout, joints, size)
    vis = make_policy(vis_spec, layout.action_dim)
    vis.network = visuomotor_network(vis_spec, layout.action_dim, settings, seed=0)
    vis.network.vision.freeze()
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    vis_ms = _infer_ms(vis, rng.standard_normal(2 * layout.n_joints), image, args.calls)
    print(f"inference per step: mlp {mlp_ms:.3f} ms, visuomotor {vis_ms:.3f} ms")

    T, dt, M, N = 100, 0.05, 4, 5
    system = arm_like_system(layout, dt, rng, sensor_std=1e-3)
    cost = reach_cost(layout)
    x0s = [system.state(0.3 * rng.standard_normal(layout.n_joints)) for _ in range(M)]
    controllers = [init_lqr(x0, layout.dim, layout.action_dim, dt, T) for x0 in x0s]
    timed = {}
    for name, policy in (("mlp", mlp), ("visuomotor", vis)):
        algo = MDGPS(GPSConfig(), layout.dim, layout.action_dim, T, list(controllers), policy)
        for i in range(max(2, args.iterations)):
            batches = [collect(system, c, x0, N, rng, 1.0)
                       for c, x0 in zip(algo.controllers, x0s, strict=True)]
            obs = [Observations(policy.observation.from_states(b.X), None
                                if policy.observation.image_size is None else
                                rng.integers(0, 256, (N, T, *size, 3), dtype=np.uint8))
                   for b in batches]
            start = time.perf_counter()
            report = algo.iteration(batches, obs, cost)
            timed[name] = (time.perf_counter() - start, report.policy_s)
            print(f"MDGPS iteration {i} ({name}): {timed[name][0]:.2f} s (policy "
                  f"{report.policy_s:.2f} s, trajopt {report.trajopt_s:.2f} s), sample cost "
                  f"{np.mean(report.mean_cost):.2f}")
    return {"mlp_infer_ms": mlp_ms, "visuomotor_infer_ms": vis_ms,
            "train_s_per_iteration": timed["mlp"][0],
            "visuomotor_train_s_per_iteration": timed["visuomotor"][0],
            "visuomotor_policy_s": timed["visuomotor"][1],
            "visuomotor_image_size": list(size)}


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
