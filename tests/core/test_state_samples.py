"""State layout and sample validation."""

from __future__ import annotations

import numpy as np
import pytest

from mbpl_ros.core.errors import MismatchError, NonFiniteError, ShapeError
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.core.state import StateLayout


def test_default_layout():
    layout = StateLayout()
    assert (layout.dim, layout.action_dim) == (26, 7)
    names = layout.names()
    assert len(names) == 26 and names[0] == "q0" and names[-1] == "ee1_vz"
    for part, first in [("joint_positions", "q0"), ("joint_velocities", "qd0"),
                        ("ee_points", "ee0_x"), ("ee_velocities", "ee0_vx")]:
        assert names[getattr(layout, part)][0] == first
    sizes = [len(range(26)[getattr(layout, p)]) for p in
             ("joint_positions", "joint_velocities", "ee_points", "ee_velocities")]
    assert sizes == [7, 7, 6, 6]


def test_layout_names_refuse_other_layouts():
    StateLayout().check_names(StateLayout().names())
    with pytest.raises(MismatchError, match="expected 26 entries"):
        StateLayout().check_names(StateLayout(n_joints=6).names())


def test_sample_batch_validation():
    X, U = np.zeros((3, 5, 4)), np.zeros((3, 5, 2))
    batch = SampleBatch(X, U)
    assert (batch.N, batch.T, batch.dX, batch.dU) == (3, 5, 4, 2)
    with pytest.raises(ShapeError, match=r"\(N, T, dX\)"):
        SampleBatch(X[0], U)
    with pytest.raises(ShapeError, match="to match X"):
        SampleBatch(X, np.zeros((3, 4, 2)))
    bad = U.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(NonFiniteError, match="sample 2, step 3"):
        SampleBatch(X, bad)
    with pytest.raises(MismatchError, match="expected T=6"):
        batch.check_dims(6, 4, 2)
    both = SampleBatch.concatenate([batch, batch])
    assert both.N == 6
