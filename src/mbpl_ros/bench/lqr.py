"""`mbpl bench lqr`: time of one LQR-FLM update (prior update + dynamics fit + trajectory
optimisation) on a synthetic but arm-shaped problem.

Problem: the default robot layout (7 joints, 2 end-effector points: dX = 26, dU = 7), T = 100
steps of 0.05 s, 4 conditions x 5 trials per iteration, the reach cost, init_lqr controllers.
Trials come from a random stable linear-Gaussian stand-in for an arm
(:func:`~mbpl_ros.core.synthetic.arm_like_system`) with sensor noise on every state entry, so the
GMM sees data as non-degenerate as a real arm's. Exploration noise is smoothed over 1 step.

- first: a fresh algorithm's first update (the prior starts empty and is fitted cold).
- steady: updates after the prior holds its full 20 trajectories per condition, warm-started.

Each figure is the median over ``--repeats`` updates (wall time; ``cpu_s`` is the process CPU
time, all threads, which shows how much other load on the machine inflated the wall time). BLAS
runs on one thread per worker (the algorithm's default). The returned dict is the JSON contract of
DESIGN section 6, plus prior_s, em_iterations and cpu_s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mbpl_ros.core.controllers import init_lqr
from mbpl_ros.core.costs import reach_cost
from mbpl_ros.core.lqr_flm import LQRFLM, IterationReport, LQRFLMConfig
from mbpl_ros.core.state import StateLayout
from mbpl_ros.core.synthetic import arm_like_system, collect

KEYS = ("update_s", "fit_s", "trajopt_s", "backward_passes")


def _timed(algo: LQRFLM, batches, cost) -> tuple[IterationReport, float]:
    """One update and the CPU time the process spent on it (all threads)."""
    cpu = time.process_time()
    report = algo.iteration(batches, cost)
    return report, time.process_time() - cpu


def _median(runs: list[tuple[IterationReport, float]]) -> dict:
    reports = [r for r, _ in runs]
    out = {key: statistics.median(getattr(r, key) for r in reports) for key in KEYS}
    out["backward_passes"] = int(round(out["backward_passes"]))
    out["prior_s"] = statistics.median(r.prior_s for r in reports)
    out["em_iterations"] = int(statistics.median(r.em_iterations for r in reports))
    out["cpu_s"] = statistics.median(c for _, c in runs)
    return out


def _line(name: str, runs: list[tuple[IterationReport, float]]) -> str:
    m = _median(runs)
    return (f"{name:>6}: update {m['update_s']:.3f} s (prior {m['prior_s']:.3f} s in "
            f"{m['em_iterations']} EM iterations, fit {m['fit_s']:.3f} s, trajopt "
            f"{m['trajopt_s']:.3f} s, {m['backward_passes']} backward passes; process CPU "
            f"{m['cpu_s']:.3f} s), median of {len(runs)}: "
            + ", ".join(f"{r.update_s:.3f}" for r, _ in runs))


def run(args: list[str] | None = None) -> dict:
    """Measure and print; return the result dict (the CLI prints it as the last line)."""
    parser = argparse.ArgumentParser(prog="mbpl bench lqr", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="updates measured per figure")
    parser.add_argument("--conditions", type=int, default=4)
    parser.add_argument("--samples", type=int, default=5, help="trials per condition")
    parser.add_argument("--horizon", type=int, default=100, help="T, policy steps")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(args or [])

    layout = StateLayout()
    dX, dU, T, dt = layout.dim, layout.action_dim, opts.horizon, 0.05
    rng = np.random.default_rng(opts.seed)
    system = arm_like_system(layout, dt, rng, noise_std=0.05, sensor_std=1e-3)
    x0s = [system.state(0.5 * rng.standard_normal(layout.n_joints))
           for _ in range(opts.conditions)]
    initial = [init_lqr(x0, dX, dU, dt, T) for x0 in x0s]
    cost = reach_cost(layout)
    config = LQRFLMConfig()

    def trials(algo: LQRFLM):
        return [collect(system, c, x0, opts.samples, rng, smooth_sigma=1.0)
                for c, x0 in zip(algo.controllers, x0s, strict=True)]

    print(f"LQR-FLM update: {opts.conditions} conditions x {opts.samples} trials, T={T}, "
          f"dX={dX}, dU={dU}, GMM prior up to {config.prior.max_clusters} clusters over "
          f"{config.prior.max_samples} trajectories per condition")
    started = time.perf_counter()
    batches = trials(LQRFLM(config, layout, dU, T, dt, initial))
    first = [_timed(LQRFLM(config, layout, dU, T, dt, initial), batches, cost)
             for _ in range(opts.repeats)]
    print(_line("first", first))

    algo = LQRFLM(config, layout, dU, T, dt, initial)
    warmup = -(-config.prior.max_samples // opts.samples)  # fills the prior's buffer
    for _ in range(warmup):
        algo.iteration(trials(algo), cost)
    steady = [_timed(algo, trials(algo), cost) for _ in range(opts.repeats)]
    print(_line("steady", steady))
    last = steady[-1][0]
    print(f"after {algo.iterations_done} iterations: mean trial cost "
          f"{np.mean(last.mean_cost):.2f} (first {np.mean(first[0][0].mean_cost):.2f}), "
          f"step_mult {np.round(last.step_mult, 2).tolist()}, bench took "
          f"{time.perf_counter() - started:.1f} s")
    return {
        "first": _median(first),
        "steady": _median(steady),
        "conditions": opts.conditions,
        "samples": opts.samples,
        "T": T,
        "dX": dX,
        "dU": dU,
    }
