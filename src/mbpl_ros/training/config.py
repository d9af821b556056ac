"""Settings of a training run, parsed by the CLI and passed to the loops as one object."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mbpl_ros.core.lqr_flm import LQRFLMConfig


@dataclass(frozen=True)
class InitialControllerConfig:
    """The LQR controller that holds x0 on a guessed double-integrator model (gps defaults)."""

    init_var: float = 1.0
    """Action noise variance, (N m)^2, of the first iteration's exploration."""
    stiffness: float = 1.0
    """Weight on the joint position error of the hold-x0 LQR."""
    stiffness_vel: float = 0.5
    """Velocity weight relative to ``stiffness``."""
    final_weight: float = 1.0
    """Final-step multiplier of the hold-x0 LQR cost."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    The physics runs at 1 kHz; every policy step of ``dt`` seconds holds the action constant,
    which is what the dynamics fit assumes.
    """

    task: str = "peg"
    """reach or peg."""
    backend: str = "mujoco"
    """mujoco or pybullet; real: a real arm trained through the ROS graph (launch/real_arm)."""
    algorithm: str = "lqr-flm"
    """lqr-flm (local controllers only), mdgps or badmm (guided policy search)."""
    graph: str = "direct"
    """direct: the simulator runs in this process; ros: a graph of ROS 2 node processes (sim
    bridges, state estimators, controller executors, dynamics fitter, trainer) over DDS."""
    conditions: int = 4
    """Training conditions (initial configuration + target)."""
    samples: int = 5
    """Noisy trials per condition and iteration."""
    iterations: int = 10
    """LQR-FLM iterations."""
    horizon: int = 100
    """Policy steps T per trial."""
    dt: float = 0.05
    """Policy step, s."""
    seed: int = 0
    """Seeds conditions, exploration noise and the GMM."""
    urdf: Path | None = None
    """Serial-arm URDF; None: the project's arm7."""
    ee_link: str | None = None
    """End-effector link of ``urdf``."""
    out: Path = Path("runs/latest")
    """Run directory: summary.json, plots, controllers."""
    noise_smoothing: float = 2.0
    """Std of the Gaussian smoothing of exploration noise over time, policy steps."""
    progress: bool = True
    """Show a progress bar."""
    workers: int = 1
    """ros graph: simulated arms (namespaces /arm0, /arm1, ...) running trials in parallel."""
    resume: bool = False
    """ros graph: continue the stopped session in ``out`` from its last checkpoint, reusing every
    recorded rollout."""
    trial_retries: int = 2
    """ros graph: extra attempts of a trial whose execution was aborted (kept out of the fit)."""
    initial: InitialControllerConfig = field(default_factory=InitialControllerConfig)
    lqr: LQRFLMConfig = field(default_factory=LQRFLMConfig)

    def __post_init__(self) -> None:
        if self.task not in ("reach", "peg"):
            raise ValueError(f"task: expected reach or peg, found {self.task!r}")
        if self.graph not in ("direct", "ros"):
            raise ValueError(f"graph: expected direct or ros, found {self.graph!r}")
        if self.workers < 1 or self.trial_retries < 0:
            raise ValueError(f"workers: expected >= 1 and trial_retries >= 0, found "
                             f"{self.workers} and {self.trial_retries}")
        if self.graph == "direct" and (self.workers != 1 or self.resume):
            raise ValueError("--workers and --resume need --graph ros")
        if self.backend not in ("mujoco", "pybullet") and not (
                self.backend == "real" and self.graph == "ros"):
            raise ValueError(f"backend: expected mujoco or pybullet (or real with the ros "
                             f"graph), found {self.backend!r}")
        for name in ("conditions", "iterations", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, found {getattr(self, name)}")
        if self.samples < 2:
            raise ValueError(f"samples: expected >= 2 per condition (a dynamics fit needs them), "
                             f"found {self.samples}")
        if self.dt <= 0:
            raise ValueError(f"dt: expected > 0 s, found {self.dt}")
        if self.urdf is not None and self.ee_link is None:
            raise ValueError("--urdf needs --ee-link (the end-effector link of that URDF)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        from mbpl_ros.cli import default_run_dir

        return cls(task=args.task, backend=args.backend, algorithm=args.algorithm,
                   graph=args.graph, conditions=args.conditions, samples=args.samples,
                   iterations=args.iterations, horizon=args.horizon, dt=args.dt, seed=args.seed,
                   urdf=args.urdf, ee_link=args.ee_link, out=args.out or default_run_dir(),
                   progress=not args.quiet, workers=getattr(args, "workers", 1),
                   resume=getattr(args, "resume", False))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["urdf"] = None if self.urdf is None else str(self.urdf)
        d["out"] = str(self.out)
        return d
