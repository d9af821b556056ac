"""ruff over the GPS package, its loop, bench and tests; an accurate ``__all__``."""

import subprocess
import sys
from pathlib import Path

import pytest

import mbpl_ros.gps as gps

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["src/mbpl_ros/gps", "src/mbpl_ros/training/gps_loop.py", "src/mbpl_ros/bench/policy.py",
         "tests/gps"]


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip(f"ruff not installed next to {sys.executable}")
    result = subprocess.run([str(ruff), "check", *PATHS], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names_exist():
    assert not [name for name in gps.__all__ if not hasattr(gps, name)]
