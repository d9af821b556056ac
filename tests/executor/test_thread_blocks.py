"""The bench's count of how often a process's threads blocked, checked on a thread of this test
process that blocks a known number of times."""

import os
import threading
from pathlib import Path

import pytest

from mbpl_ros.bench.control_loop import thread_blocks

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


def test_blocks_of_a_named_thread_are_counted_under_its_name_without_the_number():
    waits = 25
    named, go, done, release = (threading.Event() for _ in range(4))

    def blocker() -> None:
        # the kernel name, as Fast DDS gives its threads ("dds.shm.7411")
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("probe.4711")
        named.set()
        go.wait()
        pause = threading.Event()
        for _ in range(waits):
            pause.wait(0.002)  # times out: the thread sleeps, one voluntary switch each
        done.set()
        release.wait()  # still alive (and named) while the test reads the counts

    thread = threading.Thread(target=blocker)
    thread.start()
    try:
        assert named.wait(5)
        before = thread_blocks(os.getpid())
        go.set()
        assert done.wait(5)
        after = thread_blocks(os.getpid())
    finally:
        go.set()
        release.set()
        thread.join()
    assert "probe" in before and not any(name.startswith("probe.") for name in after)
    # its own sleeps, give or take a few waits for the interpreter; no other thread's
    assert waits <= after["probe"] - before["probe"] <= waits + 10
