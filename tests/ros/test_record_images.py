"""Trials that record camera frames (RunTrial record_images) through the whole graph as processes
over DDS: the sim bridge renders one frame per policy step in lockstep, the executor puts the
frame of every state into the rollout, the trainer writes it into the MCAP bag."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_recording import read_with_rosbags

from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.ros_graph import Graph

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_lockstep_trials_record_the_frame_of_every_step_in_the_bag(tmp_path):
    T, width, height = 12, 40, 30
    config = TrainConfig(task="reach", graph="ros", conditions=1, samples=2, iterations=1,
                         horizon=T, seed=2, out=tmp_path / "run", progress=False)
    start = time.perf_counter()
    with Graph(config, record_images=True) as graph:
        graph.parameters["sim_bridge"].update(image_width=width, image_height=height)
        graph.start_workers()
        graph.start_fitter()
        trainer = graph.start_trainer()
        end = time.monotonic() + 150
        while trainer.process.poll() is None:
            assert time.monotonic() < end, trainer.log_tail()
            graph.check_alive(exclude=(trainer,))
            time.sleep(0.2)
        assert trainer.process.returncode == 0, trainer.log_tail()
    wall = time.perf_counter() - start

    # Read back by rosbags, not by the writer's library.
    messages = read_with_rosbags(config.out / "rollouts")
    rollouts = [m for t, m in messages if t in ("/rollouts", "/evaluation_rollouts")]
    assert len(rollouts) == 3 and not any(r.aborted for r in rollouts), \
        [(t, r.trial_id, r.aborted, r.abort_reason) for (t, _), r in zip(
            [(t, m) for t, m in messages if t in ("/rollouts", "/evaluation_rollouts")],
            rollouts, strict=True)]
    for rollout in rollouts:
        assert len(rollout.images) == T, rollout.trial_id
        x0_ns = stamp_ns(rollout.header.stamp)
        state_ns = x0_ns + np.round(np.asarray(rollout.stamps) * 1e9).astype(np.int64)
        image_ns = [stamp_ns(image.header.stamp) for image in rollout.images]
        np.testing.assert_array_equal(image_ns, state_ns[:T])
        for image in rollout.images:
            assert (image.width, image.height, image.encoding) == (width, height, "rgb8")
            assert image.step == 3 * width and len(image.data) == 3 * width * height
        pixels = np.stack([np.asarray(i.data, dtype=np.uint8) for i in rollout.images])
        assert pixels.std() > 0, "blank frames"
    print(f"record_images session: {wall:.1f} s wall")
