"""The direct GPS loop end to end on the simulator (tiny run: contract, not learning)."""

from __future__ import annotations

import json

from mbpl_ros.cli import main
from mbpl_ros.gps.policy import load_policy


def test_mdgps_run_writes_summary_policy_and_plots(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--algorithm", "mdgps", "--task", "reach", "--conditions", "2",
                 "--samples", "2", "--iterations", "1", "--horizon", "8",
                 "--test-conditions", "2", "--policy-steps", "10", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "mdgps" and summary["gps"]["policy"] == "mlp"
    record = summary["iterations"][0]
    for key in ("mean_cost", "eval_cost", "trials", "env_steps", "wall_s", "conditions",
                "train_success_rate", "test_success_rate", "policy_cost", "test_conditions"):
        assert key in record
    assert record["trials"] == 4 and record["eval_trials"] == 4
    assert len(record["conditions"]) == 2 and len(record["test_conditions"]) == 2
    assert 0.0 <= record["test_success_rate"] <= 1.0
    for name in ("policy.pt", "controllers.npz", "training.png", "policy.png", "samples.npz"):
        assert (out / name).is_file()
    policy = load_policy(out / "policy.pt", joint_names=summary["robot"]["joints"])
    assert policy.observation.image_size is None
