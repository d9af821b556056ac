"""Guided policy search through the ROS graph: MDGPS with the sim bridge (lockstep), state
estimator, controller executor, dynamics fitter and trainer as processes over real DDS. The
executors run the trainer's policy files for the noiseless evaluations (training and held-out
conditions); the session is stopped after two iterations and resumed for a third."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_training_graph import read_bag

from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.ros_graph import GraphError, train

pytestmark = [pytest.mark.ros, pytest.mark.slow]

torch = pytest.importorskip("torch")

from mbpl_ros.gps.policy import load_policy  # noqa: E402
from mbpl_ros.training.direct import make_problem  # noqa: E402
from mbpl_ros.training.gps_loop import GPSSettings, best_iteration  # noqa: E402

SETTINGS = GPSSettings(test_conditions=2)


def config(out, iterations: int, resume: bool = False) -> TrainConfig:
    return TrainConfig(task="reach", algorithm="mdgps", graph="ros", conditions=2, samples=4,
                       iterations=iterations, horizon=20, seed=1, out=out, progress=False,
                       resume=resume)


def test_mdgps_through_the_graph_improves_the_global_policy_and_resumes(tmp_path):
    out = tmp_path / "run"
    start = time.perf_counter()
    first = train(config(out, 2), SETTINGS)
    assert len(first["iterations"]) == 2
    summary = train(config(out, 3, resume=True), SETTINGS)
    wall = time.perf_counter() - start
    assert (summary["graph"], summary["algorithm"]) == ("ros", "mdgps")
    assert summary["resumed_at"] == [2] and summary["gps"]["test_conditions"] == 2
    its = summary["iterations"]
    assert [r["iteration"] for r in its] == [0, 1, 2]
    assert [r["trials"] for r in its] == [8, 16, 24]
    assert [r["eval_trials"] for r in its] == [4, 8, 12]
    gps_fields = {"train_success_rate", "test_success_rate", "policy_cost", "test_policy_cost",
                  "test_conditions", "policy_loss", "policy_kl", "policy_s", "sampled",
                  "policy_faults", "eval_trials", "eval_cost", "mean_cost", "env_steps"}
    for record in its:
        assert gps_fields <= set(record), gps_fields - set(record)
        assert record["aborted"] == [] and record["policy_faults"] == 0
        assert record["sampled"] == "controllers" and record["prior_clusters"] >= 1
        assert len(record["conditions"]) == 2 and len(record["test_conditions"]) == 2
        assert 0.0 <= record["train_success_rate"] <= 1.0
        assert 0.0 <= record["test_success_rate"] <= 1.0
        assert np.isfinite(record["policy_cost"]) and np.isfinite(record["test_policy_cost"])
    costs = [r["policy_cost"] for r in its]
    print(f"ros mdgps: policy cost per iteration {np.round(costs, 3).tolist()}, test cost "
          f"{[round(r['test_policy_cost'], 3) for r in its]}, sample cost "
          f"{[round(r['mean_cost'], 3) for r in its]}, {wall:.0f} s wall")
    assert costs[-1] < costs[0], costs

    # The summary's policy costs are those of the policy file the executors ran: the recorded
    # evaluation rollouts give that cost again, and their actions are the file's policy on the
    # recorded states (clamped to the effort limits as the executor and the arm do) wherever the
    # executor's joint-limit guard had no reason to act.
    path = out / its[-1]["policy_file"]
    assert path.exists() and (out / "policy.pt").exists() and (out / "gps_state.pt").exists()
    # best_policy.pt is the iteration file of the best training-condition result (after resume)
    best = summary["best_policy"]
    assert best == best_iteration(its)
    assert (out / "best_policy.pt").read_bytes() == \
        (out / its[best["iteration"]]["policy_file"]).read_bytes()
    policy = load_policy(path)
    cfg = config(out, 3)
    problem = make_problem(cfg, np.random.default_rng(cfg.seed))
    arm = problem.setup.description
    messages = read_bag(out / "rollouts")
    last_evals = {m.condition: m for t, m in messages
                  if t == "/evaluation_rollouts" and m.trial_id.startswith("i2-c")}
    assert sorted(last_evals) == [0, 1]
    checked = 0
    for m, msg in last_evals.items():
        X = np.asarray(msg.states).reshape(-1, msg.dx)[:cfg.horizon]
        U = np.asarray(msg.actions).reshape(-1, msg.du)
        assert float(np.sum(problem.cost.eval(X, U).l)) == pytest.approx(
            its[-1]["conditions"][m]["eval_cost"], rel=1e-9)
        expected = np.clip(policy.mean_actions(X), -arm.effort_limits, arm.effort_limits)
        q = X[:, problem.layout.joint_positions]
        free = np.all((q > arm.lower + 0.05) & (q < arm.upper - 0.05), axis=1)
        np.testing.assert_allclose(U[free], expected[free], rtol=1e-5, atol=1e-5)
        checked += int(free.sum())
    assert checked >= cfg.horizon, f"only {checked} steps away from the joint limits"

    # Every trial is in the bag, the held-out evaluations under their own trial ids, and the
    # resumed session repeated no training trial of the first two iterations.
    rollouts = [m for t, m in messages if t == "/rollouts"]
    assert len(rollouts) == 24 and len({r.trial_id for r in rollouts}) == 24
    evals = [m.trial_id for t, m in messages if t == "/evaluation_rollouts"]
    assert len(evals) == 12 and sum("-t" in e for e in evals) == 6
    assert (out / "policy.png").stat().st_size > 1000


def test_the_graph_refuses_a_visuomotor_policy_with_the_reason(tmp_path):
    with pytest.raises(GraphError, match="state-based mlp policy only"):
        train(config(tmp_path / "run", 1), GPSSettings(policy="visuomotor"))
    assert not (tmp_path / "run" / "rollouts").exists()

