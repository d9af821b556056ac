"""LQR-FLM trained directly against the simulator in this process (`mbpl train --graph direct`).

Read top to bottom: build the arm, the conditions and the initial controllers; then every
iteration run N noisy trials per condition, refit and re-optimise, and evaluate one noiseless trial
of each new controller; write summary.json, plots and controllers to the run directory.

The pieces both training graphs share (the problem set-up, the summary and its per-iteration
record, the run directory) live here too; the ROS graph (:mod:`.ros_graph`, the ``gps_trainer``
node) builds on them so that both write the same summary.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mbpl_ros.arm_state import ArmStateBuilder
from mbpl_ros.core.controllers import LinearGaussianController, init_lqr, smoothed_noise
from mbpl_ros.core.costs import Cost, peg_cost, reach_cost
from mbpl_ros.core.lqr_flm import LQRFLM, IterationReport
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.training.config import TrainConfig
from mbpl_sim import DEFAULT_EE_LINK, default_urdf, make_sim
from mbpl_sim.base import ArmSim
from mbpl_sim.description import ArmDescription
from mbpl_sim.tasks import (
    Condition,
    TaskSpec,
    make_conditions,
    make_fk_conditions,
    make_task,
    task_kinematics,
)


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


@dataclass(frozen=True)
class ArmSetup:
    """The arm and task of a run without a simulator: what :func:`condition_table` and
    :func:`initial_controllers` read (an :class:`ArmSim` has the same two attributes)."""

    description: ArmDescription
    task: TaskSpec

    @classmethod
    def from_config(cls, config: TrainConfig) -> ArmSetup:
        urdf = config.urdf if config.urdf is not None else default_urdf()
        ee_link = config.ee_link if config.urdf is not None else DEFAULT_EE_LINK
        return cls(ArmDescription.from_urdf(urdf, ee_link), make_task(config.task))


@dataclass(frozen=True)
class Problem:
    """Everything a training loop derives from its config before the first trial."""

    setup: ArmSetup | ArmSim
    conditions: list[Condition]
    builder: ArmStateBuilder
    cost: Cost
    initial: list[LinearGaussianController]

    @property
    def layout(self):
        return self.builder.layout


def make_problem(config: TrainConfig, rng: np.random.Generator,
                 setup: ArmSetup | ArmSim | None = None) -> Problem:
    """Conditions (drawn first from ``rng``), state builder, cost and initial controllers."""
    setup = setup if setup is not None else ArmSetup.from_config(config)
    conditions = condition_table(config, setup, rng)
    builder = ArmStateBuilder(task_kinematics(setup.task, setup.description))
    cost = peg_cost(builder.layout) if config.task == "peg" else reach_cost(builder.layout)
    return Problem(setup, conditions, builder, cost,
                   initial_controllers(config, builder, setup, conditions))


def condition_table(config: TrainConfig, sim: ArmSetup | ArmSim,
                    rng: np.random.Generator) -> list[Condition]:
    """The run's conditions: :func:`task_conditions` of its arm, task and size."""
    return task_conditions(sim.task, sim.description, config.conditions, rng,
                           own_urdf=config.urdf is not None)


def task_conditions(task: TaskSpec, arm: ArmDescription, n: int, rng: np.random.Generator,
                    own_urdf: bool) -> list[Condition]:
    """The condition table every training graph and node draws (one rule, so that the sim
    bridge, the executors and the trainer of a ROS graph hold the direct loop's table).

    The project's arm draws targets from the task's workspace box with the tool pointing down;
    an arm given by its own URDF (``own_urdf``) reaches goals taken from its forward kinematics
    (always reachable, with the ee points' goals in ``target_points``).
    """
    if own_urdf and task.name == "reach":
        return make_fk_conditions(task, arm, n, rng)
    return make_conditions(task, arm, n, rng)


def initial_controllers(config: TrainConfig, builder: ArmStateBuilder, sim: ArmSetup | ArmSim,
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


def new_summary(config: TrainConfig, arm: ArmDescription, **extra) -> dict:
    """The summary.json header (DESIGN.md section 6) with no iterations yet."""
    return {"task": config.task, "backend": config.backend, "algorithm": config.algorithm,
            "graph": config.graph, "seed": config.seed,
            "robot": {"urdf": str(arm.urdf_path), "ee_link": arm.ee_link,
                      "joints": list(arm.joint_names)},
            "config": config.to_dict(), **extra, "iterations": []}


@dataclass(frozen=True)
class Evaluation:
    """The noiseless trial of one condition after an update."""

    final_distance: float
    success: bool
    cost: float


def iteration_record(iteration: int, report: IterationReport, evaluation: list[Evaluation],
                     trials: int, env_steps: int, wall_s: float, **extra) -> dict:
    """One entry of summary["iterations"]; ``extra`` adds graph-specific fields."""
    M = len(evaluation)
    return {
        "iteration": iteration,
        "mean_cost": float(np.mean(report.mean_cost)),
        "eval_cost": float(np.mean([e.cost for e in evaluation])),
        "trials": trials,
        "env_steps": env_steps,
        "eval_trials": (iteration + 1) * M,
        "wall_s": wall_s,
        "update_s": report.update_s,
        "conditions": [{"condition": m, "final_distance": e.final_distance,
                        "success": e.success, "eval_cost": e.cost,
                        "sample_cost": report.mean_cost[m], "kl": report.kl[m],
                        "step_mult": report.step_mult[m], "eta": report.eta[m],
                        "predicted_improvement": _finite_or_none(report.predicted_improvement[m]),
                        "actual_improvement": _finite_or_none(report.actual_improvement[m])}
                       for m, e in enumerate(evaluation)],
        "test_success_rate": None,
        "warnings": list(report.warnings),
        **extra,
    }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: the step adjustment's estimates are NaN where there were none."""
    return float(value) if np.isfinite(value) else None


def status_line(record: dict) -> str:
    """One human-readable line per iteration."""
    conditions = record["conditions"]
    successes = sum(bool(c["success"]) for c in conditions)
    return (f"iteration {record['iteration']}: sample cost {record['mean_cost']:.3f}, noiseless "
            f"cost {record['eval_cost']:.3f}, success {successes}/{len(conditions)}")


def train(config: TrainConfig) -> dict:
    """Run LQR-FLM on the simulated arm; returns the summary also written to summary.json."""
    config.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    sim = make_sim(config.backend, config.urdf, config.ee_link, task=config.task)
    try:
        problem = make_problem(config, rng, sim)
        conditions, builder, cost = problem.conditions, problem.builder, problem.cost
        layout = builder.layout
        algo = LQRFLM(config.lqr, layout, layout.action_dim, config.horizon, config.dt,
                      problem.initial)

        summary = new_summary(config, sim.description)
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

            evaluation = []
            for m, c in enumerate(conditions):
                e = run_trial(sim, builder, c, algo.controllers[m], config.dt)
                evaluation.append(Evaluation(e.final_distance, e.success,
                                             float(np.sum(cost.eval(e.X, e.U).l))))
            record = iteration_record(i, report, evaluation, trials, env_steps,
                                      time.perf_counter() - start)
            summary["iterations"].append(record)
            successes = sum(e.success for e in evaluation)
            bar.set_postfix(cost=f"{record['mean_cost']:.2f}", success=f"{successes}/"
                            f"{len(conditions)}")
            if not config.progress:
                print(status_line(record), flush=True)
            write_run(config, summary, algo)
        return summary
    finally:
        sim.close()


def write_run(config: TrainConfig, summary: dict, algo: LQRFLM) -> None:
    """summary.json, plots and controllers, rewritten after every iteration (a crash keeps them)."""
    # Here, not at the top: the nodes import this module for task_conditions, without matplotlib.
    from mbpl_ros.training.report import write_plots

    path = config.out / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)
    algo.save(config.out / "controllers.npz")
    write_plots(summary, config.out)
