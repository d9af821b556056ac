"""The real-time loop's DDS side: a thread that takes the states and publishes the commands.

Fast DDS takes a reader's lock to hand over a message and a writer's lock to send one; its own
threads hold the same locks while they store an arriving message or send a heartbeat, and at
normal priority they lose the CPU to the SCHED_FIFO loops. A loop that takes and publishes itself
then waits, at times for milliseconds, and (through rclpy) holds the interpreter while it waits.
Traced on this VM: half of the executor's ticks that ran over 0.8 ms had blocked inside the take,
a quarter inside the publish.

So, as ros2_controllers does with its real-time buffer and publisher, the loop only reads a
latest-value slot and leaves the newest command in another: this thread waits on the state
subscription and on a guard condition the loop triggers, takes and publishes through
:mod:`mbpl_ros.rcl_serialized` (the interpreter released during each DDS call), and runs at one
priority below the loop when SCHED_FIFO is granted, so that it is not preempted while it holds
the interpreter. A command the thread has not sent when the next one comes is replaced by it (the
newer one is what the robot should get) and counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

from mbpl_ros.rcl_serialized import RclError, SerializedPublisher, SerializedTaker
from mbpl_ros.realtime import try_realtime_priority

WAIT_TIMEOUT_NS = 20_000_000  # wake now and then to notice a stop


class LoopIo:
    """Moves the loop's inputs and outputs to and from DDS in a thread of its own.

    ``on_state(raw, received_ns)`` runs in this thread with the newest state of each wake-up
    (received_ns: its arrival, system clock); ``on_published(tag, start_s, end_s)`` after every
    command sent (perf_counter times around the DDS write). The loop calls :meth:`send`.
    """

    def __init__(self, waiter: Node, subscription, publisher,
                 on_state: Callable[[bytes, int], None],
                 on_published: Callable[[Any, float, float], None],
                 on_error: Callable[[str], None], priority: int) -> None:
        self._context = waiter.context
        self._subscription = subscription
        # on the node no executor spins, so that its triggers wake only this thread
        self._guard = waiter.create_guard_condition(lambda: None)
        self._taker = SerializedTaker(subscription)
        self._publisher = SerializedPublisher(publisher)
        self._on_state, self._on_published, self._on_error = on_state, on_published, on_error
        self._priority = priority
        self._pending: tuple[int, bytes, Any] | None = None  # written by the loop only
        self._sent = 0
        self.superseded = 0
        """Commands replaced by a newer one before this thread sent them."""
        self.realtime_granted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop_io", daemon=True)
        self._thread.start()

    def send(self, raw: bytes, tag: Any) -> None:
        """Loop thread: make ``raw`` the command to publish next (``tag`` comes back in
        ``on_published``)."""
        seq = 1 if self._pending is None else self._pending[0] + 1
        self._pending = (seq, raw, tag)  # one reference store: the thread sees all or nothing
        self._guard.trigger()

    def cpu_time(self) -> float:
        """CPU time this thread has used, s (readable from any thread)."""
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(self._thread.ident))
        except (OSError, TypeError):  # not started yet or already gone
            return float("nan")

    def _run(self) -> None:
        if self._priority > 0:
            self.realtime_granted = try_realtime_priority(self._priority)
        wait_set = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, self._context.handle)
        try:
            while not self._stop.is_set():
                wait_set.clear_entities()
                wait_set.add_subscription(self._subscription.handle)
                wait_set.add_guard_condition(self._guard.handle)
                wait_set.wait(WAIT_TIMEOUT_NS)
                self._publish_pending()
                self._take_states()
        except Exception as err:  # noqa: BLE001  the context went away, or a bug: say which
            if self._context.ok() and not self._stop.is_set():
                self._on_error(f"loop I/O thread stopped: {err!r}")
                raise
        finally:
            wait_set.destroy_when_not_in_use()

    def _publish_pending(self) -> None:
        pending = self._pending
        if pending is None or pending[0] == self._sent:
            return
        seq, raw, tag = pending
        self.superseded += seq - self._sent - 1
        self._sent = seq
        start = time.perf_counter()
        try:
            self._publisher.publish(raw)
        except RclError as err:
            if self._context.ok():
                self._on_error(f"command not published: {err}")
            return
        self._on_published(tag, start, time.perf_counter())

    def _take_states(self) -> None:
        """Take every state waiting; hand over the newest."""
        newest = None
        while True:
            try:
                taken = self._taker.take()
            except RclError as err:
                if self._context.ok():
                    self._on_error(f"state not taken: {err}")
                break
            if taken is None:
                break
            newest = taken
        if newest is not None:
            self._on_state(*newest)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and release the DDS entities (before the nodes are destroyed)."""
        self._stop.set()
        if self._context.ok():
            self._guard.trigger()
        self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            self._taker.close()
            self._publisher.close()
