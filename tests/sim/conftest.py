"""Fixtures for the simulator tests: real engines, no fakes."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import mbpl_sim  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def arm7_urdf() -> Path:
    return mbpl_sim.default_urdf()


@pytest.fixture(scope="session")
def arm3_urdf() -> Path:
    return DATA / "arm3.urdf"


@pytest.fixture(params=mbpl_sim.BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module", params=mbpl_sim.BACKENDS)
def reach_sim(request):
    """One reach simulator per backend for a whole test module (tests reset it themselves)."""
    sim = mbpl_sim.make_sim(request.param, task="reach")
    yield sim
    sim.close()


@pytest.fixture(scope="module", params=mbpl_sim.BACKENDS)
def peg_sim(request):
    sim = mbpl_sim.make_sim(request.param, task="peg")
    yield sim
    sim.close()


@pytest.fixture(scope="session")
def spinner1_urdf() -> Path:
    return DATA / "spinner1.urdf"
