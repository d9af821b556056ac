"""Plots of a training run, saved next to its summary.json."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_plots(summary: dict, out: Path) -> Path:
    """training.png: cost per iteration (samples and noiseless) and success/final distance."""
    its = summary["iterations"]
    x = [r["iteration"] for r in its]
    fig, (ax_cost, ax_dist) = plt.subplots(1, 2, figsize=(10, 4))
    ax_cost.plot(x, [r["mean_cost"] for r in its], "o-", label="noisy samples (mean)")
    ax_cost.plot(x, [r["eval_cost"] for r in its], "s--", label="noiseless controller")
    ax_cost.set_xlabel("iteration")
    ax_cost.set_ylabel("trajectory cost")
    ax_cost.set_title(f"{summary['task']} on {summary['backend']}: cost")
    ax_cost.legend()
    n_cond = len(its[0]["conditions"]) if its else 0
    for m in range(n_cond):
        ax_dist.plot(x, [r["conditions"][m]["final_distance"] for r in its], "o-",
                     label=f"condition {m}")
    rates = [sum(c["success"] for c in r["conditions"]) / max(1, n_cond) for r in its]
    ax_rate = ax_dist.twinx()
    ax_rate.step(x, rates, "k:", where="mid", label="success rate")
    ax_rate.set_ylim(-0.05, 1.05)
    ax_rate.set_ylabel("success rate")
    ax_dist.set_yscale("log")
    ax_dist.set_xlabel("iteration")
    ax_dist.set_ylabel("final tip distance to target, m")
    ax_dist.set_title("noiseless trials")
    ax_dist.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = out / "training.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
