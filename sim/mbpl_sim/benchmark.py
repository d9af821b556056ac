"""Speed of a backend: physics steps per second and camera frame time."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mbpl_sim.tasks import make_conditions


def measure_backend(
    backend: str,
    seconds: float = 1.0,
    frames: int = 20,
    urdf_path: str | Path | None = None,
    ee_link: str | None = None,
    task: str = "reach",
    seed: int = 0,
) -> dict[str, float]:
    """Measure one backend on the default arm (or ``urdf_path`` / ``ee_link``).

    Steps are single 1 ms physics steps (``step(torque, n_steps=1)``, as the 1 kHz sim bridge
    calls it) with random torques of 10 % of the effort limits, changed every 50 steps, and
    gravity compensation on; the loop runs for ``seconds`` of wall time. Frames are 64x64 RGB
    renders from the camera frame, after one warm-up render (which creates the GL context).

    Returns:
        ``{"steps_per_s": float, "frame_ms": float}`` (mean over the run).
    """
    from mbpl_sim import make_sim  # deferred: mbpl_sim imports this module's siblings

    rng = np.random.default_rng(seed)
    with make_sim(backend, urdf_path, ee_link, task=task) as sim:
        condition = make_conditions(sim.task, sim.description, 1, rng)[0]
        sim.reset(condition)
        limits = sim.description.effort_limits
        steps = 0
        start = time.perf_counter()
        deadline = start + seconds
        torque = np.zeros_like(limits)
        while True:
            if steps % 50 == 0:
                if time.perf_counter() >= deadline:
                    break
                torque = rng.uniform(-0.1, 0.1, limits.shape) * limits
            sim.step(torque)
            steps += 1
        steps_per_s = steps / (time.perf_counter() - start)
        sim.render()
        start = time.perf_counter()
        for _ in range(frames):
            sim.render()
        frame_ms = (time.perf_counter() - start) / frames * 1e3
    return {"steps_per_s": float(steps_per_s), "frame_ms": float(frame_ms)}
