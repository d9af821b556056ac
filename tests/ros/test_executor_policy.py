"""Neural policies in the controller executor without ROS: reading a policy file for this robot
(refusals with the reason), the numpy evaluation against the torch network, and a policy trial
stepped by the executor's core at 1 kHz (evaluated at step boundaries, held in between, faults
replaced by zero torque and reported). The same over DDS: test_executor.py. Visuomotor policy
files: tests/executor/test_visuomotor_policy.py and test_executor_visuomotor.py."""

from __future__ import annotations

import numpy as np
import pytest

from mbpl_ros.core.state import StateLayout
from mbpl_ros.executor import (
    ExecutorConfig,
    ExecutorCore,
    LoadedPolicy,
    Mode,
    PdGains,
    PolicyActor,
    PolicyCache,
    PolicyLoadError,
    SafetyAction,
    SafetyFilter,
    SafetyLimits,
    StartTrial,
    StateSample,
    TrialFinished,
    TrialSpec,
    load_trial_policy,
)

torch = pytest.importorskip("torch")

from mbpl_ros.gps.policy import (  # noqa: E402
    Normalizer,
    ObservationSpec,
    load_policy,
    make_policy,
    save_policy,
)

JOINTS = tuple(f"joint{i}" for i in range(1, 8))
LAYOUT = StateLayout(7, 1)


def policy_file(path, joints=JOINTS, layout=LAYOUT, seed=0):
    spec = ObservationSpec.full_state(layout, joints)
    policy = make_policy(spec, len(joints), hidden=(32, 32), channels=4, seed=seed)
    rng = np.random.default_rng(seed)
    policy.obs_norm = Normalizer(0.1 * rng.standard_normal(spec.dim),
                                 rng.uniform(0.5, 2.0, spec.dim))
    policy.action_norm = Normalizer(0.2 * rng.standard_normal(len(joints)),
                                    np.full(len(joints), 3.0))
    policy.variance = rng.uniform(0.1, 0.5, len(joints))
    return save_policy(policy, path, dt=0.05)


def test_numpy_evaluation_matches_the_torch_network_and_noise_is_scaled_by_its_std(tmp_path):
    path = policy_file(tmp_path / "p.pt")
    loaded = load_trial_policy(path, JOINTS, LAYOUT.names())
    assert loaded.evaluator == "numpy" and loaded.dt == 0.05 and loaded.dU == 7
    reference = load_policy(path)
    X = np.random.default_rng(1).standard_normal((30, LAYOUT.dim))
    noise = np.random.default_rng(2).standard_normal((30, 7))
    actor = PolicyActor(loaded, 30, noise)
    actions = np.stack([actor.act(t, X[t]) for t in range(30)])
    expected = reference.mean_actions(X) + np.sqrt(reference.variance) * noise
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(actions).max() > 1.0 and actor.faults == 0
    # The guarded call of the policy itself gives the same action.
    np.testing.assert_allclose(actions[3], reference.act(X[3], noise=noise[3]).u, atol=1e-5)


@pytest.mark.parametrize("case, reason", [
    ("joints", "was trained for joints"),
    ("layout", "observes state entries"),
    ("nan", "non-finite values in ['body.0.weight']"),
    ("missing", "not found"),
    ("garbage", "not a readable torch checkpoint"),
])
def test_a_policy_that_does_not_fit_this_robot_is_refused_with_the_reason(tmp_path, case, reason):
    path = tmp_path / "p.pt"
    if case == "joints":
        policy_file(path, joints=tuple(f"other{i}" for i in range(7)))
    elif case == "layout":
        policy_file(path, layout=StateLayout(7, 2))
    elif case == "nan":
        policy_file(path)
        payload = torch.load(path, weights_only=True)
        payload["state_dict"]["body.0.weight"][0, 0] = float("nan")
        torch.save(payload, path)
    elif case == "garbage":
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(PolicyLoadError, match=reason.replace("[", r"\[").replace("]", r"\]")
                       .replace(".", r"\.")):
        if case == "missing":
            load_trial_policy(path, JOINTS, LAYOUT.names())
        else:
            PolicyCache(JOINTS, LAYOUT.names()).load(str(path))


def test_the_cache_reloads_a_rewritten_file(tmp_path):
    path = str(policy_file(tmp_path / "p.pt", seed=0))
    cache = PolicyCache(JOINTS, LAYOUT.names())
    first = cache.load(path)
    assert cache.get(path) is first
    x = np.ones(LAYOUT.dim)
    policy_file(tmp_path / "p.pt", seed=5)
    assert cache.get(path) is None
    second = cache.load(path)
    assert not np.allclose(first.mean_action(x), second.mean_action(x))


# ------------------------------------------------------------------- a trial in the core

N = 3
DX = 4


def core() -> ExecutorCore:
    limits = SafetyLimits(effort=np.full(N, 5.0), lower=np.full(N, -3.0), upper=np.full(N, 3.0),
                          margin=0.0, limit_damping=np.zeros(N))
    return ExecutorCore(ExecutorConfig(gains=PdGains(np.full(N, 4.0), np.full(N, 1.0))),
                        SafetyFilter(limits), Mode.HOLD)


class CountingMean:
    """A stand-in network: u = W obs, NaN when obs[0] > 0.5; counts its calls."""

    def __init__(self) -> None:
        self.W = np.arange(N * DX, dtype=float).reshape(N, DX) / 10.0
        self.calls = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        u = self.W @ obs
        return u * np.nan if obs[0] > 0.5 else u


def test_a_policy_trial_evaluates_once_per_step_and_never_sends_a_non_finite_action():
    mean = CountingMean()
    loaded = LoadedPolicy("stand-in", np.arange(DX), DX, N, np.full(N, 0.5), mean, "numpy", 0.01,
                          "stand-in")
    T, ticks = 6, 10
    spec = TrialSpec(PolicyActor(loaded, T), T, 0.01, ticks, 0, "policy-trial")
    c = core()
    c.submit(StartTrial(1, spec))
    commands, xs = [], []
    now = 0.0
    for k in range(T * ticks + 1):
        step = k // ticks
        # State 2 makes the stand-in network return NaN; state 4 is itself non-finite.
        x = np.array([0.9 if step == 2 else 0.1 * step, 0.2, -0.1, 0.3])
        if step == 4:
            x[1] = np.inf
        xs.append(x)
        commands.append(c.step(now, StateSample(now, now, np.zeros(N), np.zeros(N), x, None,
                                                round(now * 1e9))))
        now += 0.001
    (finished,) = [e for e in c.events if isinstance(e, TrialFinished)]
    result = finished.result
    assert not result.aborted and result.policy_faults == 2, result.reason
    assert "2 policy steps gave non-finite values" in result.reason
    assert mean.calls == T - 1  # once per step; the non-finite state never reaches the network
    expected = np.array([mean.W @ xs[t * ticks] for t in range(T)])
    expected[[2, 4]] = 0.0
    np.testing.assert_allclose(result.actions, expected)
    sent = np.array(commands[:T * ticks])
    assert np.all(np.isfinite(sent))
    np.testing.assert_allclose(sent, np.repeat(expected, ticks, axis=0))  # held for dt
    faults = [e for e in c.events if isinstance(e, SafetyAction) and e.kind == "policy_fault"]
    assert [("step 2" in e.message, "step 4" in e.message) for e in faults] == \
        [(True, False), (False, True)]
    assert "non-finite network output" in faults[0].message
    assert "non-finite observation" in faults[1].message
