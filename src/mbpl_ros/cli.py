"""The `mbpl` command line: train, bench, demo, and the nodes.

The CLI only parses; the work is done by plain functions that take config objects.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path

NODES = {
    "sim_bridge": "mbpl_ros.nodes.sim_bridge",
    "dynamics_fitter": "mbpl_ros.nodes.dynamics_fitter",
    "gps_trainer": "mbpl_ros.nodes.gps_trainer",
    "state_estimator": "mbpl_ros.nodes.state_estimator",
    "controller_executor": "mbpl_ros.nodes.controller_executor",
}
BENCHES = {
    "control-loop": "mbpl_ros.bench.control_loop",
    "sim": "mbpl_ros.bench.sim",
    "lqr": "mbpl_ros.bench.lqr",
    "policy": "mbpl_ros.bench.policy",
}


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["reach", "peg"], default="peg")
    parser.add_argument("--backend", choices=["mujoco", "pybullet"], default="mujoco")
    parser.add_argument("--algorithm", choices=["lqr-flm", "mdgps", "badmm"], default="lqr-flm",
                        help="lqr-flm: local controllers only; mdgps / badmm: guided policy "
                             "search, distilling them into one neural-network policy")
    parser.add_argument("--graph", choices=["direct", "ros"], default="direct",
                        help="direct: sample the simulator in-process; ros: run the ROS 2 node "
                             "graph (sim bridges, estimators, executors, fitter, trainer)")
    parser.add_argument("--workers", type=int, default=1,
                        help="--graph ros: simulated arms running trials in parallel")
    parser.add_argument("--resume", action="store_true",
                        help="--graph ros: continue the stopped session in --out")
    parser.add_argument("--conditions", type=int, default=4, help="training conditions")
    parser.add_argument("--samples", type=int, default=5, help="noisy trials per condition")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=100, help="policy steps T")
    parser.add_argument("--dt", type=float, default=0.05, help="policy step, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--urdf", type=Path, default=None, help="any serial-arm URDF")
    parser.add_argument("--ee-link", default=None, help="end-effector link of --urdf")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default runs/<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--record-images", action="store_true",
                        help="--graph ros: every trial records the camera frame of each policy "
                             "step (rollouts and bag)")
    gps = parser.add_argument_group("guided policy search (--algorithm mdgps / badmm)")
    gps.add_argument("--policy", choices=["mlp", "visuomotor"], default="mlp",
                     help="mlp: state-based; visuomotor: camera image (32x32) + q, qd, the "
                          "target seen only in the image")
    gps.add_argument("--visuomotor", action="store_const", const="visuomotor", dest="policy",
                     help="same as --policy visuomotor")
    gps.add_argument("--test-conditions", type=int, default=0,
                     help="held-out conditions evaluated every iteration (own seed)")
    gps.add_argument("--on-policy", action="store_true",
                     help="mdgps: sample the global policy instead of the local controllers")
    gps.add_argument("--policy-steps", type=int, default=300, help="gradient steps per S-step")
    gps.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def cmd_train(args: argparse.Namespace) -> int:
    from mbpl_ros.training import TrainConfig, train

    if args.resume and args.out is None:
        raise SystemExit("--resume needs --out (the run directory of the stopped session)")
    config = TrainConfig.from_args(args)
    if args.record_images and config.graph != "ros":
        raise SystemExit("--record-images needs --graph ros (the direct GPS loop records the "
                         "images its policy needs by itself)")
    if config.algorithm in ("mdgps", "badmm"):
        from mbpl_ros.training.gps_loop import GPSSettings

        settings = GPSSettings(policy=args.policy, test_conditions=args.test_conditions,
                               sample_on_policy=args.on_policy, policy_steps=args.policy_steps,
                               threads=args.threads)
        if config.graph == "ros":
            from mbpl_ros.training.ros_graph import train as train_ros

            summary = train_ros(config, settings, record_images=args.record_images)
        else:
            from mbpl_ros.gps.vision import PretrainingError
            from mbpl_ros.training.gps_loop import train as train_gps

            try:
                summary = train_gps(config, settings)
            except PretrainingError as err:
                raise SystemExit(f"mbpl train: {err}") from None
    elif config.graph == "ros":
        from mbpl_ros.training.ros_graph import train as train_ros

        summary = train_ros(config, record_images=args.record_images)
    else:
        summary = train(config)
    print(f"wrote {config.out}/summary.json")
    last = summary["iterations"][-1] if summary["iterations"] else None
    if last is not None:
        successes = sum(c["success"] for c in last["conditions"])
        print(f"final mean cost {last['mean_cost']:.3f}, success {successes}/"
              f"{len(last['conditions'])} conditions")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from mbpl_ros.gps.distill import distill_files

    result = distill_files(args.policies, args.out, temperature=args.temperature,
                           steps=args.steps, seed=args.seed)
    print(json.dumps(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHES[args.name])
    result = module.run(args.rest)
    print(json.dumps(result))
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    module = importlib.import_module(NODES[args.name])
    module.main(args=[sys.argv[0], *args.rest])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: a peg-insertion session on the simulated arm, trained through the ROS graph
    (sim bridge, state estimator, 1 kHz executor, dynamics fitter and trainer as processes)."""
    out = args.out or default_run_dir()
    argv = ["--task", "peg", "--backend", "mujoco", "--graph", args.graph, "--conditions", "4",
            "--samples", "5", "--iterations", str(args.iterations), "--seed", "0",
            "--out", str(out)]
    parser = argparse.ArgumentParser()
    _add_train_arguments(parser)
    return cmd_train(parser.parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbpl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train controllers on the simulated arm")
    _add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="print benchmark figures; the last line is JSON")
    bench.add_argument("name", choices=sorted(BENCHES))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="benchmark options")
    bench.set_defaults(func=cmd_bench)

    distill = sub.add_parser("distill", help="distil several trained policies into one network")
    distill.add_argument("policies", nargs="+", type=Path,
                         help="run directories (with policy.pt and samples.npz) of the teachers")
    distill.add_argument("--out", type=Path, required=True, help="student policy file")
    distill.add_argument("--temperature", type=float, default=1.0,
                         help="soft-target temperature: teacher covariances are scaled by it")
    distill.add_argument("--steps", type=int, default=2000)
    distill.add_argument("--seed", type=int, default=0)
    distill.set_defaults(func=cmd_distill)

    node = sub.add_parser("node", help="run one ROS 2 node (takes --ros-args)")
    node.add_argument("name", choices=sorted(NODES))
    node.add_argument("rest", nargs=argparse.REMAINDER)
    node.set_defaults(func=cmd_node)

    demo = sub.add_parser("demo", help="the main job: peg insertion on the simulated arm")
    demo.add_argument("--out", type=Path, default=None)
    demo.add_argument("--iterations", type=int, default=10)
    demo.add_argument("--graph", choices=["ros", "direct"], default="ros")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
