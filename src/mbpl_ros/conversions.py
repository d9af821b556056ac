"""Conversions between mbpl_interfaces messages and core types, with validation at the edge.

Every ``*_from_msg`` raises :class:`MessageError` (a ValueError) naming the field, the expected
size and what was found, so a node can reject a malformed message and log why.
"""

from __future__ import annotations

import numpy as np
from mbpl_interfaces.msg import LinearGaussianController as ControllerMsg
from mbpl_interfaces.msg import LinearGaussianDynamics as DynamicsMsg
from mbpl_interfaces.msg import Rollout as RolloutMsg

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.dynamics import LinearGaussianDynamics
from mbpl_sim.tasks import Condition


class MessageError(ValueError):
    """A message that cannot be turned into a core object (wrong sizes, NaN, bad layout)."""


def _array(values, shape: tuple[int, ...], field: str) -> np.ndarray:
    flat = np.asarray(values, dtype=float)
    expected = int(np.prod(shape))
    if flat.size != expected:
        raise MessageError(f"{field}: expected {expected} values for shape {shape}, "
                           f"found {flat.size}")
    if not np.all(np.isfinite(flat)):
        raise MessageError(f"{field}: non-finite value at index "
                           f"{int(np.argwhere(~np.isfinite(flat))[0][0])}")
    return flat.reshape(shape)


def _flat(array: np.ndarray) -> list[float]:
    return np.ascontiguousarray(array, dtype=float).ravel().tolist()


def stamp_to_ns(stamp) -> int:
    """A builtin_interfaces/Time (a header's stamp) as integer nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def condition_with_overrides(base: Condition, request) -> Condition:
    """``base`` with what a ResetToCondition request (or a RunTrial goal) overrides: its
    joint_positions if given, and its target_position with its target_points (None if not
    given) if given. Sizes and values are the caller's to check (a Condition refuses non-finite
    ones)."""
    q = np.asarray(request.joint_positions, dtype=float) if len(request.joint_positions) \
        else base.joint_positions
    if not len(request.target_position):
        return Condition(q, base.target_position, base.target_points)
    points = np.asarray(request.target_points, dtype=float).reshape(-1, 3) \
        if len(request.target_points) else None
    return Condition(q, np.asarray(request.target_position, dtype=float), points)


def controller_to_msg(controller: LinearGaussianController, condition: int, dt: float,
                      state_names: list[str]) -> ControllerMsg:
    """The controller as a message (x_ref zero: any nominal trajectory is folded into k)."""
    msg = ControllerMsg()
    msg.condition = condition
    msg.horizon, msg.du, msg.dx = controller.K.shape
    msg.dt = float(dt)
    msg.gain = _flat(controller.K)
    msg.offset = _flat(controller.k)
    msg.x_ref = [0.0] * (controller.T * controller.dX)
    msg.covariance = _flat(controller.covar)
    msg.state_names = list(state_names)
    return msg


def controller_from_msg(msg: ControllerMsg,
                        state_names: list[str] | None = None) -> LinearGaussianController:
    """Validated controller; ``state_names`` (if given) must equal the message's layout."""
    T, dU, dX = int(msg.horizon), int(msg.du), int(msg.dx)
    if T < 1 or dU < 1 or dX < 1:
        raise MessageError(f"controller: expected positive horizon, du, dx; found {T}, {dU}, {dX}")
    if state_names is not None and list(msg.state_names) != list(state_names):
        raise MessageError(f"controller: state layout {list(msg.state_names)[:4]}... (dx {dX}) "
                           f"does not match this robot's {list(state_names)[:4]}... "
                           f"(dx {len(state_names)})")
    if not np.isfinite(msg.dt) or msg.dt <= 0:
        raise MessageError(f"controller: expected dt > 0 s, found {msg.dt}")
    K = _array(msg.gain, (T, dU, dX), "controller.gain")
    k = _array(msg.offset, (T, dU), "controller.offset")
    x_ref = _array(msg.x_ref, (T, dX), "controller.x_ref") if len(msg.x_ref) else None
    covar = (_array(msg.covariance, (T, dU, dU), "controller.covariance")
             if len(msg.covariance) else np.broadcast_to(np.eye(dU), (T, dU, dU)))
    if x_ref is not None:
        k = k - np.einsum("tux,tx->tu", K, x_ref)
    try:
        return LinearGaussianController(K, k, covar)
    except ValueError as err:
        raise MessageError(f"controller: {err}") from err


def rollout_to_msg(states: np.ndarray, actions: np.ndarray, condition: int, dt: float,
                   state_names: list[str], trial_id: str = "", stamps: np.ndarray | None = None,
                   aborted: bool = False, abort_reason: str = "") -> RolloutMsg:
    """A trial as a message: states (T+1, dX) or (T, dX), actions (T, dU)."""
    states = np.asarray(states, dtype=float)
    actions = np.asarray(actions, dtype=float)
    msg = RolloutMsg()
    msg.trial_id = trial_id
    msg.condition = condition
    msg.horizon, msg.du = actions.shape
    msg.dx = states.shape[1]
    msg.dt = float(dt)
    msg.states = _flat(states)
    msg.actions = _flat(actions)
    msg.stamps = [] if stamps is None else _flat(stamps)
    msg.aborted = aborted
    msg.abort_reason = abort_reason
    msg.state_names = list(state_names)
    return msg


def rollout_from_msg(msg: RolloutMsg) -> tuple[np.ndarray, np.ndarray]:
    """States (T or T+1, dX) and actions (T, dU) of a rollout message, validated."""
    T, dU, dX = int(msg.horizon), int(msg.du), int(msg.dx)
    n_states = len(msg.states) // dX if dX else 0
    if n_states not in (T, T + 1):
        raise MessageError(f"rollout: expected {T} or {T + 1} states of size {dX}, found "
                           f"{len(msg.states)} values")
    states = _array(msg.states, (n_states, dX), "rollout.states")
    actions = _array(msg.actions, (T, dU), "rollout.actions")
    return states, actions


def dynamics_to_msg(dynamics: LinearGaussianDynamics, condition: int) -> DynamicsMsg:
    msg = DynamicsMsg()
    msg.condition = condition
    msg.horizon = dynamics.T
    msg.dx, msg.du = dynamics.dX, dynamics.Fm.shape[2] - dynamics.dX
    msg.fm = _flat(dynamics.Fm)
    msg.fv = _flat(dynamics.fv)
    msg.dyn_covar = _flat(dynamics.covar)
    msg.x0_mean = _flat(dynamics.x0_mean)
    msg.x0_covar = _flat(dynamics.x0_covar)
    return msg


def dynamics_from_msg(msg: DynamicsMsg) -> LinearGaussianDynamics:
    T, dX, dU = int(msg.horizon), int(msg.dx), int(msg.du)
    if T < 2 or dX < 1 or dU < 1:
        raise MessageError(f"dynamics: expected horizon >= 2, dx, du >= 1; found {T}, {dX}, {dU}")
    return LinearGaussianDynamics(
        _array(msg.fm, (T - 1, dX, dX + dU), "dynamics.fm"),
        _array(msg.fv, (T - 1, dX), "dynamics.fv"),
        _array(msg.dyn_covar, (T - 1, dX, dX), "dynamics.dyn_covar"),
        _array(msg.x0_mean, (dX,), "dynamics.x0_mean"),
        _array(msg.x0_covar, (dX, dX), "dynamics.x0_covar"),
    )
