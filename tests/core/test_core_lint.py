"""ruff (project configuration) over the LQR-FLM core, its benchmark and tests; and an accurate
``__all__``."""

import subprocess
import sys
from pathlib import Path

import pytest

import mbpl_ros.core as core

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["src/mbpl_ros/core", "src/mbpl_ros/bench/lqr.py", "tests/core"]


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip(f"ruff not installed next to {sys.executable}")
    paths = [p for p in PATHS if (ROOT / p).exists()]
    result = subprocess.run([str(ruff), "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names_exist():
    missing = [name for name in core.__all__ if not hasattr(core, name)]
    assert not missing
    assert len(set(core.__all__)) == len(core.__all__)
