"""Helpers shared by the simulator tests."""

import numpy as np


def random_free_state(sim, rng: np.random.Generator, speed: float = 1.0):
    """(q, qd) within 70 % of the joint ranges, |qd| <= speed, with the arm touching nothing."""
    arm = sim.description
    mid, half = (arm.lower + arm.upper) / 2, (arm.upper - arm.lower) / 2
    for _ in range(100):
        q = mid + rng.uniform(-0.7, 0.7, arm.n_joints) * half
        qd = rng.uniform(-speed, speed, arm.n_joints)
        sim.set_state(q, qd)
        if sim.n_contacts() == 0:
            return q, qd
    raise RuntimeError("no contact-free state found")
