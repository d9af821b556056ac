"""End to end: LQR-FLM against the real simulator, through the `mbpl train` entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbpl_ros.cli import main
from mbpl_ros.core.lqr_flm import LQRFLM
from mbpl_ros.core.state import StateLayout

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_reach_training_lowers_cost_and_writes_the_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--task", "reach", "--backend", "mujoco", "--conditions", "2",
                 "--samples", "5", "--iterations", "3", "--horizon", "60", "--seed", "1",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["task"], summary["backend"], summary["algorithm"], summary["seed"]) == (
        "reach", "mujoco", "lqr-flm", 1)
    its = summary["iterations"]
    assert [r["iteration"] for r in its] == [0, 1, 2]
    assert [r["trials"] for r in its] == [10, 20, 30]
    assert [r["env_steps"] for r in its] == [600, 1200, 1800]
    assert all(r["wall_s"] > 0 for r in its)
    for record in its:
        assert [c["condition"] for c in record["conditions"]] == [0, 1]
        for c in record["conditions"]:
            assert c["final_distance"] >= 0 and isinstance(c["success"], bool)
    # The step adjustment's estimates: none before there is a previous iteration to compare.
    assert all(c["predicted_improvement"] is None for c in its[0]["conditions"])
    assert all(isinstance(c["actual_improvement"], float) for c in its[1]["conditions"])
    # The noiseless controller after the last update beats the initial hold-x0 controller's
    # noisy samples and gets the tip closer than it started.
    assert its[-1]["eval_cost"] < its[0]["mean_cost"]
    first = np.mean([c["final_distance"] for c in its[0]["conditions"]])
    last = np.mean([c["final_distance"] for c in its[-1]["conditions"]])
    assert last < first
    assert (out / "training.png").stat().st_size > 1000
    algo = LQRFLM.load(out / "controllers.npz", layout=StateLayout(7, 2))
    assert algo.conditions == 2 and algo.iterations_done == 3


def test_same_seed_gives_the_same_run(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        main(["train", "--task", "reach", "--conditions", "1", "--samples", "3",
              "--iterations", "1", "--horizon", "15", "--seed", "4", "--out", str(out),
              "--quiet"])
        runs.append(json.loads((out / "summary.json").read_text())["iterations"])
    assert runs[0][0]["mean_cost"] == runs[1][0]["mean_cost"]
    assert runs[0][0]["conditions"] == runs[1][0]["conditions"]


def test_any_serial_arm_urdf_trains_a_reach(tmp_path):
    out = tmp_path / "arm3"
    urdf = ROOT / "tests" / "sim" / "data" / "arm3.urdf"
    assert main(["train", "--task", "reach", "--urdf", str(urdf), "--ee-link", "hand",
                 "--conditions", "1", "--samples", "4", "--iterations", "2", "--horizon", "30",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["robot"]["joints"] == ["yaw", "shoulder", "elbow"]
    assert len(summary["iterations"]) == 2


def test_urdf_without_ee_link_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--ee-link"):
        main(["train", "--urdf", str(ROOT / "tests" / "sim" / "data" / "arm3.urdf"),
              "--out", str(tmp_path)])


def test_record_images_flag_reaches_the_graph_and_needs_it(tmp_path, monkeypatch):
    import mbpl_ros.training.ros_graph as ros_graph

    with pytest.raises(SystemExit, match="--graph ros"):
        main(["train", "--record-images", "--out", str(tmp_path)])
    calls = []
    monkeypatch.setattr(ros_graph, "train", lambda config, *args, **kwargs: calls.append(
        (config, kwargs)) or {"iterations": []})
    main(["train", "--graph", "ros", "--record-images", "--out", str(tmp_path)])
    config, kwargs = calls[0]
    assert kwargs == {"record_images": True}
    parameters = ros_graph.node_parameters(config, ["/arm0"], None, kwargs["record_images"])
    assert parameters["gps_trainer"]["record_images"] is True
    assert parameters["sim_bridge"]["camera_rate_hz"] == pytest.approx(1.0 / config.dt)
