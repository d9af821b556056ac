"""LQR-FLM trained directly against the simulator in this process (`mbpl train --graph direct`).

Read top to bottom: build the arm, the conditions and the initial controllers; then every
iteration run N noisy trials per condition, refit and re-optimise, and evaluate one noiseless trial
of each new controller; write summary.json, plots and controllers to the run directory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mbpl_ros.arm_state import ArmStateBuilder
from mbpl_ros.core.controllers import LinearGaussianController, init_lqr, smoothed_noise
from mbpl_ros.core.costs import peg_cost, reach_cost
from mbpl_ros.core.lqr_flm import LQRFLM
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.report import write_plots
from mbpl_sim import make_sim
from mbpl_sim.base import ArmSim
from mbpl_sim.tasks import Condition, make_conditions, make_fk_conditions, task_kinematics


@dataclass(frozen=True)
class Trial:
    """One trial: states X (T, dX), applied torques U (T, dU), and where the tip ended."""

    X: np.ndarray
    U: np.ndarray
    final_distance: float
    success: bool


def run_trial(sim: ArmSim, builder: ArmStateBuilder, condition: Condition,
              controller: LinearGaussianController, dt: float,
              noise: np.ndarray | None = None) -> Trial:
    """Reset to ``condition`` and run ``controller`` for its horizon, holding each action for dt.

    The recorded action is the torque the arm applied (after clamping to the effort limits),
    which is what the dynamics fit must see.
    """
    sim.reset(condition)
    targets = sim.task.target_points(condition)
    steps_per_action = max(1, round(dt / sim.timestep))
    T, dX, dU = controller.T, controller.dX, controller.dU
    X, U = np.empty((T, dX)), np.empty((T, dU))
    for t in range(T):
        X[t] = builder.state(sim.joint_positions(), sim.joint_velocities(), targets)
        action = controller.act(t, X[t], None if noise is None else noise[t])
        U[t] = sim.step(action, steps_per_action)
    ee_points = sim.ee_points_world()
    return Trial(X, U, sim.task.distance(ee_points, condition),
                 sim.task.success(ee_points, condition))


def condition_table(config: TrainConfig, sim: ArmSim,
                    rng: np.random.Generator) -> list[Condition]:
    """The project's arm draws targets from the task's workspace box with the tool pointing down;
    any other URDF reaches goals taken from its own forward kinematics (always reachable)."""
    if config.urdf is not None and config.task == "reach":
        return make_fk_conditions(sim.task, sim.description, config.conditions, rng)
    return make_conditions(sim.task, sim.description, config.conditions, rng)


def initial_controllers(config: TrainConfig, builder: ArmStateBuilder, sim: ArmSim,
                        conditions: list[Condition]) -> list[LinearGaussianController]:
    """Hold-x0 LQR per condition on a double-integrator guess with the arm's own inertia."""
    layout = builder.layout
    controllers = []
    for condition in conditions:
        q0 = condition.joint_positions
        x0 = builder.state(q0, np.zeros_like(q0), sim.task.target_points(condition))
        inertia = np.diag(builder.kinematics.mass_matrix(q0))
        init = config.initial
        controllers.append(init_lqr(
            x0, layout.dim, layout.action_dim, config.dt, config.horizon,
            init_var=init.init_var, stiffness=init.stiffness, stiffness_vel=init.stiffness_vel,
            final_weight=init.final_weight, init_gains=1.0 / inertia))
    return controllers


def train(config: TrainConfig) -> dict:
    """Run LQR-FLM on the simulated arm; returns the summary also written to summary.json."""
    config.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    sim = make_sim(config.backend, config.urdf, config.ee_link, task=config.task)
    try:
        arm, task = sim.description, sim.task
        conditions = condition_table(config, sim, rng)
        builder = ArmStateBuilder(task_kinematics(task, arm))
        layout = builder.layout
        cost = peg_cost(layout) if config.task == "peg" else reach_cost(layout)
        algo = LQRFLM(config.lqr, layout, layout.action_dim, config.horizon, config.dt,
                      initial_controllers(config, builder, sim, conditions))

        summary = {"task": config.task, "backend": config.backend,
                   "algorithm": config.algorithm, "graph": config.graph, "seed": config.seed,
                   "robot": {"urdf": str(arm.urdf_path), "ee_link": arm.ee_link,
                             "joints": list(arm.joint_names)},
                   "config": config.to_dict(), "iterations": []}
        trials = env_steps = 0
        start = time.perf_counter()
        bar = tqdm(range(config.iterations), desc="LQR-FLM", unit="it",
                   disable=not config.progress)
        for i in bar:
            batches = []
            for m, condition in enumerate(conditions):
                runs = [run_trial(sim, builder, condition, algo.controllers[m], config.dt,
                                  smoothed_noise(rng, config.horizon, layout.action_dim,
                                                 config.noise_smoothing))
                        for _ in range(config.samples)]
                batches.append(SampleBatch(np.stack([r.X for r in runs]),
                                           np.stack([r.U for r in runs])))
                trials += len(runs)
                env_steps += len(runs) * config.horizon
            report = algo.iteration(batches, cost)

            evaluation = [run_trial(sim, builder, c, algo.controllers[m], config.dt)
                          for m, c in enumerate(conditions)]
            eval_cost = [float(np.sum(cost.eval(e.X, e.U).l)) for e in evaluation]
            record = {
                "iteration": i,
                "mean_cost": float(np.mean(report.mean_cost)),
                "eval_cost": float(np.mean(eval_cost)),
                "trials": trials,
                "env_steps": env_steps,
                "eval_trials": (i + 1) * len(conditions),
                "wall_s": time.perf_counter() - start,
                "update_s": report.update_s,
                "conditions": [{"condition": m, "final_distance": e.final_distance,
                                "success": e.success, "eval_cost": eval_cost[m],
                                "sample_cost": report.mean_cost[m], "kl": report.kl[m],
                                "step_mult": report.step_mult[m], "eta": report.eta[m]}
                               for m, e in enumerate(evaluation)],
                "test_success_rate": None,
                "warnings": list(report.warnings),
            }
            summary["iterations"].append(record)
            successes = sum(e.success for e in evaluation)
            bar.set_postfix(cost=f"{record['mean_cost']:.2f}", success=f"{successes}/"
                            f"{len(conditions)}")
            if not config.progress:
                print(f"iteration {i}: sample cost {record['mean_cost']:.3f}, noiseless cost "
                      f"{record['eval_cost']:.3f}, success {successes}/{len(conditions)}",
                      flush=True)
            write_run(config, summary, algo)
        return summary
    finally:
        sim.close()


def write_run(config: TrainConfig, summary: dict, algo: LQRFLM) -> None:
    """summary.json, plots and controllers, rewritten after every iteration (a crash keeps them)."""
    path = config.out / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)
    algo.save(config.out / "controllers.npz")
    write_plots(summary, config.out)
