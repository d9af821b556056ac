"""Node processes started by the runners stop with the runner, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbpl_ros.processes import PARENT_VARIABLE

CHILD = """
import signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1])
def on_sigint(*_):
    marker.write_text("SIGINT")
    sys.exit(0)
signal.signal(signal.SIGINT, on_sigint)
from mbpl_ros.processes import stop_with_parent
stop_with_parent()
marker.write_text("ready")
time.sleep(60)
"""

PARENT = """
import os, subprocess, sys, time
from mbpl_ros.processes import child_environment
env = child_environment(os.environ) if sys.argv[3] == "yes" else dict(os.environ)
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True,
                         env=env)
print(child.pid, flush=True)
time.sleep(60)
"""


def wait_for(marker: Path, text: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if marker.is_file() and marker.read_text() == text:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("with_stop", [True, False])
def test_a_child_gets_sigint_when_its_runner_is_killed(tmp_path, with_stop):
    marker = tmp_path / "child"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, str(marker), "yes" if with_stop else "no"],
        stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    try:
        assert wait_for(marker, "ready", 30), "the child did not start"
        parent.kill()  # SIGKILL: the runner gets no chance to stop its children
        parent.wait()
        # Without child_environment (the control) the orphan runs on, which is what it
        # prevents.
        assert wait_for(marker, "SIGINT", 10 if with_stop else 1.0) == with_stop
    finally:
        try:
            os.kill(child_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("module", ["mbpl_ros.nodes.dynamics_fitter", "mbpl_ros.nodes.gps_trainer"])
def test_a_node_whose_runner_died_before_it_started_exits(module):
    """A runner that dies between starting a node and the node asking for the death signal
    sends no signal; the node notices at start-up instead of running on unattended."""
    env = {**os.environ, PARENT_VARIABLE: "1"}  # not this test's pid: as if re-parented to init
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "the process that started this one (1) has exited" in done.stderr
