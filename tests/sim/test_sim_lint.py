"""ruff (project configuration) over the simulation stand-in, its kinematics and tests."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["sim/mbpl_sim", "src/mbpl_ros/kinematics.py", "tests/sim"]


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip(f"ruff not installed next to {sys.executable}")
    result = subprocess.run([str(ruff), "check", *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
