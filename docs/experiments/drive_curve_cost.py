"""What the drives' torque-speed curve costs per physics step, next to MuJoCo's own step.

    .venv/bin/python docs/experiments/drive_curve_cost.py

Times ``ArmSim._drive_torque`` (Python floats, as the simulators run it), the same bound written
as numpy calls on the 7-entry arrays, MuJoCo's ``mj_solveM`` for the inertias and ``mj_step``,
on the peg scene, and prints microseconds per call (median of 5 repeats).
"""

import statistics
import timeit

import mujoco
import numpy as np

import mbpl_sim

sim = mbpl_sim.make_sim("mujoco", task="peg")
arm, h = sim.description, sim.timestep
effort, speed = arm.effort_limits, arm.velocity_limits
rng = np.random.default_rng(0)
qd = rng.uniform(-1.0, 1.0, arm.n_joints) * speed
own = rng.uniform(10.0, 2000.0, arm.n_joints)
command = rng.uniform(-1.0, 1.0, arm.n_joints) * effort


def numpy_bound() -> np.ndarray:
    gain = 1.0 + h * own * effort / speed
    return np.minimum(np.maximum(command, -effort * (1.0 + qd / speed) / gain),
                      effort * (1.0 - qd / speed) / gain)


floats = (command.tolist(), qd.tolist(), own.tolist())
assert np.array_equal(sim._drive_torque(*floats), numpy_bound())
model, data = sim.model, sim._data
unit = sim._unit_torques
response = np.empty_like(unit)
cases = {
    "drive bound, Python floats": lambda: sim._drive_torque(*floats),
    "drive bound, numpy calls": numpy_bound,
    "mj_solveM (inertias)": lambda: mujoco.mj_solveM(model, data, response, unit),
    "mj_step": lambda: mujoco.mj_step(model, data),
}
for name, call in cases.items():
    n = 5000
    times = timeit.repeat(call, number=n, repeat=5)
    print(f"{name}: {statistics.median(times) / n * 1e6:.1f} µs")
sim.close()
