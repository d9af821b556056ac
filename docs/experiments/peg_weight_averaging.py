"""Peg MDGPS as `mbpl train --task peg --algorithm mdgps --test-conditions 10 --iterations 12
--seed S`, also evaluating weight-averaged copies of the policy on the same conditions after
every S-step. The training itself is unchanged, so the trained policy and its averages are
compared on the same runs. Writes OUT/../OUT_averaging.json and prints one line per iteration.

    .venv/bin/python docs/experiments/peg_weight_averaging.py S OUT
"""

import copy
import json
import sys
from pathlib import Path

import numpy as np

from mbpl_ros.cli import main
from mbpl_ros.training import gps_loop

seed, out = int(sys.argv[1]), Path(sys.argv[2])
BETAS = (0.5, 0.8)
"""Exponential averages: avg <- beta avg + (1 - beta) new weights."""
log: list[dict] = []
state: dict = {"calls": 0, "ema": {}, "last": []}
evaluate = gps_loop._evaluate


def evaluate_with_averages(sim, builder, conditions, policy, config, cost):
    result = evaluate(sim, builder, conditions, policy, config, cost)
    iteration, after_s_step = divmod(state["calls"], 2)
    after_s_step = after_s_step == 0  # the training conditions come first, then held-out
    state["calls"] += 1
    if after_s_step:
        weights = {k: v.detach().clone() for k, v in policy.network.state_dict().items()}
        state["last"] = (state["last"] + [weights])[-3:]
        for beta in BETAS:
            old = state["ema"].get(beta)
            state["ema"][beta] = weights if old is None else {
                k: beta * old[k] + (1 - beta) * weights[k] for k in weights}
        log.append({"iteration": iteration})
    kind = "train" if after_s_step else "test"
    variants = {f"ema{beta}": state["ema"][beta] for beta in BETAS}
    variants["last3"] = {k: sum(w[k] for w in state["last"]) / len(state["last"])
                         for k in state["last"][0]}
    log[-1][f"trained_{kind}"] = float(np.mean([e.success for e in result[0]]))
    for name, weights in variants.items():
        averaged = copy.deepcopy(policy)
        averaged.network.load_state_dict(weights)
        evals, _ = evaluate(sim, builder, conditions, averaged, config, cost)
        log[-1][f"{name}_{kind}"] = float(np.mean([e.success for e in evals]))
    if not after_s_step:
        print(json.dumps(log[-1]), flush=True)
        (out.parent / f"{out.name}_averaging.json").write_text(json.dumps(log))
    return result


gps_loop._evaluate = evaluate_with_averages
main(["train", "--task", "peg", "--algorithm", "mdgps", "--test-conditions", "10",
      "--iterations", "12", "--seed", str(seed), "--out", str(out), "--quiet"])
