"""Policy distillation: several trained policies (teachers) into one network (student).

The lecture's multi-task distillation (Rusu et al. 2015; Parisotto et al. 2015) trains the student
on the teachers' *soft* outputs, softmax(z / T) with a temperature T, rather than on hard labels.
For Gaussian action policies the analogue of a softened categorical is a widened Gaussian: each
teacher's output at an observation o becomes the soft target N(mu_i(o), T Sigma_i), and the
student N(mu_s(o), Sigma_s) (Sigma_s diagonal, learned) minimises the expected

    D_KL(N(mu_i, T Sigma_i) || N(mu_s, Sigma_s))
      = 1/2 [tr(Sigma_s^-1 T Sigma_i) + (mu_s - mu_i)^T Sigma_s^-1 (mu_s - mu_i)
             - dU + log|Sigma_s| - log|T Sigma_i|]

over the observations each teacher was trained on (task i's data, labelled by teacher i). T = 1
matches the teachers' distributions; T > 1 spreads the student's action noise (the mean fit is
the same weighted regression, its weight Sigma_s^-1 shrinking as T grows), T < 1 sharpens it.
Teachers and student must observe the same state entries of the same robot.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mbpl_ros.core.errors import CheckpointError, MismatchError

from .policy import GaussianPolicy, Normalizer, load_policy, make_policy, save_policy


@dataclass(frozen=True)
class DistillReport:
    loss_before: float
    loss_after: float
    mean_error: tuple[float, ...]
    """RMS difference of the student's and each teacher's mean action on that teacher's data."""
    variance: tuple[float, ...]
    """The student's fitted action variances."""
    seconds: float


def soft_target_kl(mu_s: torch.Tensor, log_var_s: torch.Tensor, mu_t: torch.Tensor,
                   var_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of D_KL(N(mu_t, T diag var_t) || N(mu_s, diag exp(log_var_s)))."""
    var_s = log_var_s.exp()
    soft = temperature * var_t
    kl = 0.5 * ((soft / var_s) + (mu_s - mu_t) ** 2 / var_s - 1.0 + log_var_s - soft.log())
    return kl.sum(dim=-1).mean()


def distill(teachers: Sequence[GaussianPolicy], observations: Sequence[np.ndarray],
            student: GaussianPolicy | None = None, temperature: float = 1.0, steps: int = 2000,
            batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
            hidden: tuple[int, ...] = (64, 64)) -> tuple[GaussianPolicy, DistillReport]:
    """Train a student on the teachers' soft targets (see the module docstring).

    Args:
        teachers: state-based policies with the same observation spec.
        observations: observations[i] (n_i, dO): the data teacher i labels (its task's states).
        student: network to train (default: a fresh MLP with ``hidden`` layers, seeded).
        temperature: T > 0.

    Returns:
        The student and a :class:`DistillReport`.
    """
    if not teachers or len(teachers) != len(observations):
        raise MismatchError(f"distill: expected one observation set per teacher, found "
                            f"{len(teachers)} teachers and {len(observations)} sets")
    if temperature <= 0:
        raise ValueError(f"distill: expected temperature > 0, found {temperature}")
    spec = teachers[0].observation
    for i, t in enumerate(teachers):
        if t.observation != spec or t.is_visuomotor:
            raise MismatchError(f"distill: teacher {i} observes {t.observation.state_names[:3]}"
                                f"... (image {t.observation.image_size}); teacher 0 observes "
                                f"{spec.state_names[:3]}...; state-based teachers of one "
                                "robot and layout are required")
    start = time.perf_counter()
    obs = np.concatenate([np.asarray(o, dtype=float) for o in observations])
    mu_t = np.concatenate([t.mean_actions(o) for t, o in zip(teachers, observations,
                                                              strict=True)])
    var_t = np.concatenate([np.broadcast_to(t.variance, (len(o), t.dU))
                            for t, o in zip(teachers, observations, strict=True)])
    owner = np.concatenate([np.full(len(o), i) for i, o in enumerate(observations)])
    if student is None:
        student = make_policy(spec, teachers[0].dU, hidden, seed=seed)
    student.obs_norm = Normalizer.fit(obs)
    student.action_norm = Normalizer.fit(mu_t, floor=1e-2)
    O = torch.as_tensor(obs, dtype=torch.float32)
    MU = torch.as_tensor(mu_t, dtype=torch.float32)
    VAR = torch.as_tensor(var_t, dtype=torch.float32)
    log_var = torch.nn.Parameter(torch.as_tensor(np.log(var_t.mean(axis=0) * temperature),
                                                 dtype=torch.float32))
    opt = torch.optim.Adam([*student.network.parameters(), log_var], lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)

    def full_loss() -> float:
        with torch.no_grad():
            return float(soft_target_kl(student._forward(O, None), log_var, MU, VAR,
                                        temperature))

    before = full_loss()
    student.network.train()
    for _ in range(steps):
        idx = torch.randint(0, O.shape[0], (min(batch_size, O.shape[0]),), generator=gen)
        loss = soft_target_kl(student._forward(O[idx], None), log_var, MU[idx], VAR[idx],
                              temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.network.eval()
    after = full_loss()
    student.variance = log_var.detach().exp().numpy().astype(float)
    pred = student.mean_actions(obs)
    errors = tuple(float(np.sqrt(np.mean((pred[owner == i] - mu_t[owner == i]) ** 2)))
                   for i in range(len(teachers)))
    return student, DistillReport(before, after, errors, tuple(map(float, student.variance)),
                                  time.perf_counter() - start)


def distill_files(run_dirs: Sequence[Path], out: Path, temperature: float = 1.0,
                  steps: int = 2000, seed: int = 0) -> dict:
    """`mbpl distill`: teachers from GPS run directories (policy.pt + samples.npz), student to
    ``out``. Returns a JSON-able summary."""
    teachers, data = [], []
    for d in map(Path, run_dirs):
        for name in ("policy.pt", "samples.npz"):
            if not (d / name).is_file():
                raise CheckpointError(f"distill: {d} has no {name} (a GPS run directory of "
                                      "mbpl train --algorithm mdgps/badmm is expected)")
        policy = load_policy(d / "policy.pt")
        with np.load(d / "samples.npz") as f:
            names = [str(s) for s in f["state_names"]]
            if tuple(names) != policy.observation.state_names:
                raise CheckpointError(f"distill: {d}/samples.npz does not match its policy's "
                                      "observation layout")
            data.append(f["obs"].reshape(-1, f["obs"].shape[-1]))
        teachers.append(policy)
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # small nets: one thread is much faster on busy cores
    try:
        student, report = distill(teachers, data, temperature=temperature, steps=steps,
                                  seed=seed)
    finally:
        torch.set_num_threads(old)
    save_policy(student, out, distilled_from=[str(d) for d in run_dirs],
                temperature=temperature)
    return {"teachers": len(teachers), "out": str(out), "loss_before": report.loss_before,
            "loss_after": report.loss_after, "mean_error": list(report.mean_error),
            "seconds": report.seconds}
