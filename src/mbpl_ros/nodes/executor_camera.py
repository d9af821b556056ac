"""The controller_executor's camera side: camera frames recorded into rollouts (``record_images``)
and the frame gating of visuomotor policy trials. :class:`ExecutorCamera` is owned by
:class:`~mbpl_ros.nodes.controller_executor.ControllerExecutor`, which declares the parameters
and calls it from its callbacks, goals and event poll.

Visuomotor policies (a ``policy_path`` whose network reads camera images) run in lockstep only; in
real time the goal is refused with the reason (the bridge renders at camera_rate_hz in its physics
thread, ~30 ms a frame here, so there is no frame at each step's instant, and torch's vision pass
would compete with the 1 kHz loop for the two cores). At goal time the camera must be publishing
and its CameraInfo must show the policy's image size and, where the policy file (or its run's
summary.json) records them, its field of view and supersampling; otherwise the goal is refused
naming both cameras. In the trial each state x_t reaches the loop only once the frame stamped
exactly like it (the bridge renders it before publishing the state of that instant, with the same
stamp) has been decoded and run through the vision layers, in the ROS thread as the frame arrives
(:class:`VisionTrial`); the loop then evaluates only the network's fully connected head, in numpy
(see :mod:`mbpl_ros.executor.policy`). A state whose frame has not come ``frame_timeout_s`` after
it, or a frame of another size or encoding, aborts the trial with the reason: the policy never
runs on an older or absent frame. The trial's log line gives the per-frame decode and vision
times and the per-step time in the loop.

Camera frames (a RunTrial goal with ``record_images``): the subscription hands the ROS thread
serialized bytes, which are only queued while such a trial runs (nothing is decoded, and nothing
reaches the loop thread). When the trial ends, each state x_t (t < T) gets the newest frame stamped
at or before it and at most ``image_max_age_s`` older, and the rollout carries them in ``images``:
the sim bridge in lockstep renders a frame with every joint state, so that is the frame of x_t's
very instant. Frames still missing ``image_wait_s`` after the trial abort it, with the steps
named. Why in the rollout and not on a topic of their own: the rollout is the unit of training
data (the trainer's bag, resume, a visuomotor S-step need o_t next to x_t and u_t of one trial),
its index pairs frame and state without any matching downstream, and sensor_msgs/Image has no
field for the trial it belongs to.

Goal-time checks return the refusal text (None: the goal can go ahead); the node refuses the goal
with it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image

from mbpl_ros.camera import CameraModel, FrameError, decode_rgb
from mbpl_ros.conversions import stamp_to_ns
from mbpl_ros.executor import (
    CancelTrial,
    FrameFeatures,
    LoadedPolicy,
    PolicyActor,
    TrialResult,
)

CAMERA_DISCOVERY_S = 5.0
"""record_images, visuomotor policies: wait this long for the camera topic's publisher (and its
camera_info) to be discovered, s."""
RECENT_FRAMES = 4
"""Serialized camera frames always kept (a visuomotor trial without a reset starts from the state
the arm is in: its frame came before the goal)."""

StateFields = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""A lockstep state's (x, q, qd, target)."""
WaitUntil = Callable[[Callable[[], bool], float, float], Awaitable[bool]]
"""The node's ``_wait_until(predicate, timeout_s, period_s)``: True once the predicate holds."""


@dataclass
class VisionTrial:
    """The camera side of a running visuomotor policy trial (lockstep; ROS thread only).

    States are gated: one reaches the loop's slot only once the features of the frame stamped
    exactly like it are in :attr:`feed`; until then it is ``parked`` (the newest one), and a
    state parked longer than ``frame_timeout_s`` aborts the trial
    (:meth:`ExecutorCamera.check_frames`).
    """

    feed: FrameFeatures
    actor: PolicyActor
    token: int
    parked: tuple | None = None
    """(stamp_ns, (x, q, qd, target), monotonic time parked) of the state waiting for its frame."""
    problem: str = ""
    """A frame that cannot be fed to the policy (encoding, size), with the reason."""
    reason: str = ""
    """Why the trial was aborted from here (empty: it was not)."""
    frames: int = 0
    decode_s: list[float] = field(default_factory=list)


class ExecutorCamera:
    """The executor's camera subscriptions, recorded frames and visuomotor frame gate.

    Callbacks and coroutines run on the node's ROS thread; the loop thread never calls in.
    """

    def __init__(self, node: Node, camera_topic: str, camera_info_topic: str,
                 image_max_age_s: float, image_wait_s: float, frame_timeout_s: float,
                 lockstep: bool, deliver: Callable[[int, StateFields], None],
                 wait_until: WaitUntil, callback_group) -> None:
        """Subscribe to ``camera_topic`` (empty: no camera) and ``camera_info_topic`` (empty:
        none). ``deliver(stamp_ns, fields)`` hands a gated state on to the loop."""
        self._node = node
        self.camera_topic: str = camera_topic
        self.camera_info_topic: str = camera_info_topic
        self.image_max_age_s: float = image_max_age_s
        self.image_wait_s: float = image_wait_s
        self.frame_timeout_s: float = frame_timeout_s
        self.lockstep: bool = lockstep
        self._deliver = deliver
        self._wait_until = wait_until
        self._frames: deque[bytes] | None = None
        """Serialized camera frames of the running record_images trial (None: not recording)."""
        self._recent_frames: deque[bytes] = deque(maxlen=RECENT_FRAMES)
        self._camera_info: CameraInfo | None = None
        self._vision: VisionTrial | None = None
        """The running visuomotor trial's camera side (None: none runs)."""
        self._gate = threading.Lock()
        self._camera_sub = None
        if self.camera_topic:
            # Raw bytes: a frame is only decoded if a trial wants it, after the trial. Deep: a
            # trial needs every frame, and a busy ROS thread must not lose them to newer ones.
            self._camera_sub = node.create_subscription(
                Image, self.camera_topic, self._on_image,
                QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE), raw=True,
                callback_group=callback_group)
            if self.camera_info_topic:
                self._camera_info_sub = node.create_subscription(
                    CameraInfo, self.camera_info_topic, self._on_camera_info,
                    QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL),
                    callback_group=callback_group)

    # ------------------------------------------------------------------------ callbacks

    def _on_image(self, raw: bytes) -> None:
        frames = self._frames
        if frames is not None:
            frames.append(raw)
        self._recent_frames.append(raw)
        vision = self._vision
        if vision is not None:
            self._feed_frame(vision, raw)
            self._release_parked(vision)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def park(self, stamp_ns: int, fields: StateFields) -> bool:
        """Lockstep state callback: True if the state is parked until its frame's features
        arrive (a visuomotor trial runs and they have not), False to pass it on now."""
        vision = self._vision
        if vision is not None:
            with self._gate:
                if not vision.feed.has(stamp_ns):
                    vision.parked = (stamp_ns, fields, time.monotonic())
                    return True
                vision.parked = None
        return False

    def _release_parked(self, vision: VisionTrial, force: bool = False) -> None:
        """Hand the parked state to the loop if its frame's features have arrived (``force``:
        in any case, once the trial is over)."""
        with self._gate:
            parked = vision.parked
            if parked is None or not (force or vision.feed.has(parked[0])):
                return
            vision.parked = None
        self._deliver(parked[0], parked[1])

    def _feed_frame(self, vision: VisionTrial, raw: bytes) -> None:
        """Decode a serialized frame and run the policy's vision layers on it (ROS thread: off
        the loop; in lockstep the bridge publishes it before the state of its instant)."""
        started = time.perf_counter()
        msg = deserialize_message(raw, Image)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            image = decode_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data,
                               expected=vision.feed.policy.image_size)
        except FrameError as err:
            vision.problem = vision.problem or f"frame stamped {stamp_ns * 1e-9:.6f} s: {err}"
            return
        decoded = time.perf_counter()
        vision.feed.add(stamp_ns, image)
        vision.frames += 1
        vision.decode_s.append(decoded - started)

    # ------------------------------------------------------------------------ goal checks

    async def await_camera(self, with_info: bool = True) -> None:
        """Right after start-up the camera's publisher (and, ``with_info``, its camera_info) may
        still be unknown: wait for them up to CAMERA_DISCOVERY_S (the goal is checked after)."""
        if self._camera_sub is None:
            return
        topic = self._camera_sub.topic_name
        need_info = with_info and bool(self.camera_info_topic)
        await self._wait_until(lambda: self._node.count_publishers(topic) > 0 and (
            self._camera_info is not None or not need_info), CAMERA_DISCOVERY_S, 0.05)

    def record_refusal(self) -> str | None:
        """Why camera frames cannot be recorded (None: they can)."""
        if self._camera_sub is None:
            return "record_images: this executor has no camera (camera_topic is empty)"
        topic = self._camera_sub.topic_name
        if self._node.count_publishers(topic) == 0:
            return (f"record_images: nothing publishes {topic} (is the sim bridge's "
                    "camera on? camera_rate_hz > 0)")
        return None

    def policy_refusal(self, loaded: LoadedPolicy) -> str | None:
        """Why this executor cannot feed ``loaded``'s camera images (None: it can): it needs
        lockstep, a camera publishing, and its camera_info showing the camera the policy was
        trained with (the size always; field of view and supersampling where the policy file
        records them)."""
        what = f"policy file {loaded.path} is a visuomotor policy"
        if not self.lockstep:
            return (
                f"{what}: this executor runs those in lockstep mode only (in real time the "
                "bridge renders frames at camera_rate_hz with no frame at each step's instant, "
                "and torch's vision pass would share the 1 kHz loop's cores); run the bridge "
                "and the executor with mode lockstep")
        if self._camera_sub is None:
            return f"{what}: this executor has no camera (camera_topic is empty)"
        topic = self._camera_sub.topic_name
        if self._node.count_publishers(topic) == 0:
            return (f"{what}: nothing publishes {topic} (is the sim bridge's camera "
                    "on? camera_rate_hz = 1 / dt)")
        info = self._camera_info
        if info is None:
            where = self._camera_info_sub.topic_name if self.camera_info_topic \
                else "camera_info_topic (empty)"
            return (f"{what}: no sensor_msgs/CameraInfo on {where} within "
                    f"{CAMERA_DISCOVERY_S:g} s, so the camera cannot be checked against "
                    "the one the policy was trained with")
        try:
            camera = CameraModel.from_camera_info(info.height, info.width, info.k,
                                                  info.binning_x, info.binning_y)
        except ValueError as err:
            return f"{what}: the camera on {topic}: {err}"
        h, w = loaded.image_size
        if camera.image_size != loaded.image_size:
            return (f"{what} for {h}x{w} px (HxW) images; the camera on {topic} gives "
                    f"{camera.height}x{camera.width} (set the bridge's image_height "
                    "and image_width to the policy's)")
        trained = loaded.camera
        if trained is None:
            self._node.get_logger().warning(
                f"{loaded.path}: the file does not record its camera's field of view or "
                f"supersampling; only the image size ({h}x{w}) is checked against the camera "
                f"on {topic} ({camera.describe()})")
            return None
        differs = trained.mismatch(camera)
        if differs:
            return (f"{what} trained with the camera {trained.describe()} (from "
                    f"{loaded.camera_source}); the camera on {topic} is "
                    f"{camera.describe()}: the {' and '.join(differs)} differ (set the "
                    "bridge's camera_fovy_deg and camera_supersample to the policy's)")
        return None

    # ------------------------------------------------------------------------ trials

    def start(self, controller: object, token: int, record_images: bool, horizon: int,
              reset_first: bool) -> VisionTrial | None:
        """Before a trial (and its reset): queue frames if ``record_images``, and gate states on
        their frames if ``controller`` is a visuomotor policy (returns its :class:`VisionTrial`;
        None: not one). With a reset the feed starts empty (the bridge renders x_0's frame while
        resetting); without one it starts with the latest frames (x_0 is the state the arm is
        in)."""
        if record_images:
            # From before the reset on: the bridge renders x_0's frame while resetting.
            self._frames = deque(maxlen=max(1000, 4 * (horizon + 1)))
        actor = controller
        if not isinstance(actor, PolicyActor) or actor.frames is None:
            return None
        vision = VisionTrial(actor.frames, actor, token)
        if not reset_first:
            for raw in list(self._recent_frames):
                self._feed_frame(vision, raw)
        self._vision = vision
        return vision

    def stop(self, vision: VisionTrial | None) -> None:
        """After a trial: stop queueing frames and gating states (a parked state goes on)."""
        self._frames = None
        if vision is not None:
            self._vision = None
            self._release_parked(vision, force=True)

    def check_frames(self) -> CancelTrial | None:
        """The cancel request of the visuomotor trial whose state waits too long for its frame,
        whose frame cannot be read, or whose actor met a step without a frame (ROS thread,
        every EVENT_POLL_S while a trial runs); None: nothing to cancel."""
        vision = self._vision
        if vision is None or vision.reason:
            return None
        reason = ""
        if vision.problem:
            reason = vision.problem
        elif vision.actor.missing_frame:
            reason = vision.actor.missing_frame
        else:
            with self._gate:
                parked = vision.parked
            if parked is not None and time.monotonic() - parked[2] > self.frame_timeout_s:
                reason = self._no_frame_reason(parked[0])
        if reason:
            vision.reason = f"visuomotor policy: {reason}"
            return CancelTrial(vision.token, vision.reason)
        return None

    def _no_frame_reason(self, stamp_ns: int) -> str:
        topic = self._camera_sub.topic_name if self._camera_sub is not None else "no topic"
        return (f"no camera frame on {topic} stamped like the state at "
                f"{stamp_ns * 1e-9:.6f} s within frame_timeout_s {self.frame_timeout_s:g} s "
                "(the policy never runs on an older frame; the bridge must render one per "
                "policy step: camera_rate_hz = 1 / dt)")

    def end_vision(self, vision: VisionTrial, result: TrialResult) -> TrialResult:
        """The trial's result with the camera side's reason, and its timing in the log."""
        if result.aborted and vision.reason and vision.reason not in result.reason:
            result = replace(result, reason=f"{result.reason} ({vision.reason})")
        elif result.aborted and not vision.reason and (vision.problem or vision.parked):
            # e.g. a reset whose state never got its frame
            why = vision.problem or self._no_frame_reason(vision.parked[0])
            result = replace(result, reason=f"{result.reason} (visuomotor policy: {why})")
        vision_ms = 1e3 * np.median(vision.feed.vision_s) if vision.feed.vision_s else np.nan
        decode_ms = 1e3 * np.median(vision.decode_s) if vision.decode_s else np.nan
        step_us = 1e6 * np.asarray(vision.actor.step_s)
        self._node.get_logger().info(
            f"visuomotor trial: {vision.frames} frames, per frame on arrival (ROS thread) "
            f"decode {decode_ms:.3f} ms + vision {vision_ms:.3f} ms (median); per step in the "
            f"loop {np.median(step_us) if step_us.size else np.nan:.1f} µs median, "
            f"{step_us.max() if step_us.size else np.nan:.1f} µs max ({step_us.size} steps)")
        return result

    async def trial_images(self, result: TrialResult) -> tuple[list[Image], str]:
        """The frame of each state x_0..x_{T-1} of a finished trial, or ([], why not)."""
        wanted = result.stamps_ns[:len(result.actions)]
        max_age_ns = round(self.image_max_age_s * 1e9)
        # stamp ns -> frame; a later arrival with the same stamp (a new episode's: the sim
        # clock restarts at every reset) replaces an earlier one
        decoded: dict[int, Image] = {}
        frames = self._frames

        def pick() -> tuple[list[Image], list[int]]:
            while frames:
                msg = deserialize_message(frames.popleft(), Image)
                decoded[stamp_to_ns(msg.header.stamp)] = msg
            stamps = np.array(sorted(decoded), dtype=np.int64)
            chosen, missing = [], []
            for t, stamp in enumerate(wanted):
                i = int(np.searchsorted(stamps, stamp, side="right")) - 1
                if i < 0 or stamp - stamps[i] > max_age_ns:
                    missing.append(t)
                else:
                    chosen.append(decoded[int(stamps[i])])
            return chosen, missing

        images, missing = pick()
        if missing:
            await self._wait_until(lambda: not pick()[1], self.image_wait_s, 0.02)
            images, missing = pick()
        if missing:
            shown = missing[:10] + (["..."] if len(missing) > 10 else [])
            return [], (f"record_images: no camera frame on {self._camera_sub.topic_name} at "
                        f"most {self.image_max_age_s:g} s before the state of steps {shown} "
                        f"({len(missing)} of {len(wanted)})")
        return images, ""
