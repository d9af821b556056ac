"""Running a node process: spin it until SIGINT/SIGTERM, then shut it down cleanly."""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable

import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mbpl_ros.processes import stop_with_parent
from mbpl_ros.realtime import try_realtime_priority


def make_executor(context=None, kind: str = "events"):
    """``kind`` "events": the EventsExecutor (about half the CPU per message of the
    SingleThreadedExecutor here) where this rclpy has it, else (or for "single") the
    SingleThreadedExecutor."""
    if kind == "events":
        try:
            from rclpy.experimental.events_executor import EventsExecutor
        except ImportError:
            pass
        else:
            return EventsExecutor(context=context)
    return rclpy.executors.SingleThreadedExecutor(context=context)


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Create the node, spin it until SIGINT/SIGTERM or shutdown, then destroy it cleanly.

    SIGINT/SIGTERM only set a flag (rclpy's own handler is off): no KeyboardInterrupt lands in
    the middle of a callback, and the node's destroy_node (stopping its threads) runs before the
    context goes away. Spins with short ``spin_once`` calls: Kilted's EventsExecutor.spin()
    delivers nothing and busy-loops on this install, while spin_once(timeout) works.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    stop_with_parent()
    node = None
    try:
        node = make_node()
        # Everything created so far lives for the whole run: keep it out of the garbage
        # collector's full passes, which otherwise hold the interpreter for milliseconds.
        gc.collect()
        gc.freeze()
        priority = getattr(node, "ros_thread_priority", 0)
        if priority > 0:
            granted = try_realtime_priority(priority)
            node.get_logger().info(f"ROS thread SCHED_FIFO {priority}: "
                                   f"{'granted' if granted else 'not granted'}")
        executor = make_executor(kind=getattr(node, "ros_executor", "events"))
        executor.add_node(node)
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
