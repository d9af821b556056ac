"""The loop's serialized-message fast paths agree with rclpy's own (de)serializer."""

import numpy as np
import pytest
from mbpl_interfaces.msg import ArmState
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from mbpl_ros.cdr import (
    ArmStateReader,
    ArmStateWriter,
    CdrError,
    Float64ArrayWriter,
    JointStateReader,
    JointStateWriter,
    header_stamp_ns,
    read_arm_state,
    read_float64_array,
)


def arm_state(rng, frame_id: str, sizes: tuple[int, int, int, int]) -> ArmState:
    msg = ArmState()
    msg.header.stamp.sec = int(rng.integers(0, 2**31 - 1))
    msg.header.stamp.nanosec = int(rng.integers(0, 10**9))
    msg.header.frame_id = frame_id
    msg.x, msg.joint_positions, msg.joint_velocities, msg.target_position = (
        rng.normal(size=n).tolist() for n in sizes)
    return msg


@pytest.mark.parametrize("frame_id", ["", "a", "base_link", "world__xyz"])
@pytest.mark.parametrize("sizes", [(32, 7, 7, 3), (0, 7, 7, 0), (0, 0, 0, 0), (5, 1, 0, 3)])
def test_read_arm_state_matches_rclpy(frame_id, sizes):
    rng = np.random.default_rng(len(frame_id) * 10 + sum(sizes))
    msg = arm_state(rng, frame_id, sizes)
    raw = serialize_message(msg)
    stamp_ns, x, q, qd, target = read_arm_state(raw)
    back = deserialize_message(raw, ArmState)
    assert stamp_ns == back.header.stamp.sec * 10**9 + back.header.stamp.nanosec
    for ours, theirs in ((x, back.x), (q, back.joint_positions),
                         (qd, back.joint_velocities), (target, back.target_position)):
        np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=float))


def test_read_arm_state_refuses_truncated_and_foreign_encodings():
    raw = serialize_message(arm_state(np.random.default_rng(0), "base", (32, 7, 7, 3)))
    for cut in (3, 12, 40, len(raw) - 1):
        with pytest.raises(CdrError):
            read_arm_state(raw[:cut])
    with pytest.raises(CdrError, match="little-endian"):
        read_arm_state(b"\x00\x00" + raw[2:])  # big-endian CDR


def test_arm_state_reader_follows_a_stream_whose_shape_changes():
    """The cached layout is used only while frame id length and array sizes stay the same: a
    stream that changes them (including to the same byte length) reads like rclpy throughout."""
    rng = np.random.default_rng(7)
    # frame ids and sizes chosen so that some different shapes serialize to the same length
    shapes = [("base", (32, 7, 7, 3)), ("base", (32, 7, 7, 3)), ("lase", (32, 7, 7, 3)),
              ("base", (0, 7, 7, 0)), ("base_link_xyz", (31, 7, 7, 3)), ("base", (32, 7, 7, 3)),
              ("base", (35, 7, 7, 0)), ("", (0, 0, 0, 0)), ("base", (32, 7, 7, 3))]
    lengths = [len(serialize_message(arm_state(rng, f, s))) for f, s in shapes]
    assert len(set(lengths)) < len(set(shapes)), "no two shapes share a length: test is weak"
    reader = ArmStateReader()
    for frame_id, sizes in shapes:
        msg = arm_state(rng, frame_id, sizes)
        raw = serialize_message(msg)
        stamp_ns, x, q, qd, target = reader.read(raw)
        assert stamp_ns == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        for ours, theirs in ((x, msg.x), (q, msg.joint_positions),
                             (qd, msg.joint_velocities), (target, msg.target_position)):
            np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=float))


def test_arm_state_reader_refuses_what_read_arm_state_refuses():
    reader = ArmStateReader()
    raw = serialize_message(arm_state(np.random.default_rng(0), "base", (32, 7, 7, 3)))
    reader.read(raw)  # layout learned
    for cut in (3, 12, 40, len(raw) - 1):
        with pytest.raises(CdrError):
            reader.read(raw[:cut])
    with pytest.raises(CdrError, match="little-endian"):
        reader.read(b"\x00\x00" + raw[2:])
    np.testing.assert_array_equal(reader.read(raw)[2], read_arm_state(raw)[2])


def test_header_stamp_of_a_joint_state():
    msg = JointState()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345_678_901
    msg.name = ["a", "b"]
    msg.position = [1.0, 2.0]
    assert header_stamp_ns(serialize_message(msg)) == 12_345_678_901


def assert_rclpy_bytes_with_zero_padding(raw: bytes, msg) -> None:
    """``raw`` is rclpy's serialization of ``msg`` except in alignment padding and past the last
    field, which Fast CDR leaves as whatever its buffer held and the writers set to zero."""
    expected = serialize_message(msg)
    assert len(raw) == len(expected)
    assert deserialize_message(raw, type(msg)) == msg
    differ = [i for i, (a, b) in enumerate(zip(raw, expected, strict=True)) if a != b]
    assert all(raw[i] == 0 for i in differ), differ


@pytest.mark.parametrize("n", [1, 3, 7])
def test_float64_array_writer_matches_rclpy(n):
    values = np.random.default_rng(n).normal(size=n)
    writer = Float64ArrayWriter(n)
    raw = writer.serialize(values)
    assert_rclpy_bytes_with_zero_padding(raw, Float64MultiArray(data=values.tolist()))
    # empty layout, data offset, length: the float64s start at 20, after four bytes of padding
    assert raw[16:20] == bytes(4)
    assert Float64ArrayWriter(n).serialize(values) == raw  # no buffer leftovers in the template
    np.testing.assert_array_equal(np.frombuffer(raw[20:], "<f8"), values)
    with pytest.raises(ValueError, match="shape"):
        writer.serialize(np.zeros(n + 1))


@pytest.mark.parametrize("frame_id", ["", "world", "base_link_with_a_longer_name"])
def test_joint_state_reader_matches_rclpy(frame_id):
    rng = np.random.default_rng(len(frame_id))
    reader = JointStateReader()
    for names in (["j1", "joint_2", "j3"], ["j1", "joint_2", "j3"], ["abc", "d"]):
        msg = JointState()
        msg.header.stamp.sec, msg.header.stamp.nanosec = 7, 123
        msg.header.frame_id = frame_id
        msg.name = names
        msg.position = rng.normal(size=len(names)).tolist()
        msg.velocity = rng.normal(size=len(names)).tolist()
        msg.effort = rng.normal(size=len(names)).tolist()
        stamp_ns, frame, read_names, position, velocity = reader.read(serialize_message(msg))
        assert (stamp_ns, frame, read_names) == (7_000_000_123, frame_id, names)
        np.testing.assert_array_equal(position, msg.position)
        np.testing.assert_array_equal(velocity, msg.velocity)


@pytest.mark.parametrize("frame_id", ["", "base", "a_frame_of_odd_length"])
@pytest.mark.parametrize("with_x", [True, False])
def test_arm_state_writer_matches_rclpy(frame_id, with_x):
    rng = np.random.default_rng(3)
    n, dX = 7, 32
    writer = ArmStateWriter(n, dX)
    for stamp_ns in (0, 12_345_678_901):
        q, qd, x, target = (rng.normal(size=k) for k in (n, n, dX, 3))
        raw = writer.serialize(stamp_ns, frame_id, q, qd, *((x, target) if with_x else ()))
        msg = ArmState()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        msg.header.frame_id = frame_id
        msg.joint_positions, msg.joint_velocities = q.tolist(), qd.tolist()
        if with_x:
            msg.x, msg.target_position = x.tolist(), target.tolist()
        assert_rclpy_bytes_with_zero_padding(raw, msg)
    with pytest.raises(ValueError, match="shape"):
        writer.serialize(0, frame_id, np.zeros(n + 1), np.zeros(n))


@pytest.mark.parametrize("n", [0, 1, 7])
@pytest.mark.parametrize("dims", [[], [("joints", 7, 7)], [("a", 2, 6), ("bc", 3, 3)]])
def test_read_float64_array_matches_rclpy(n, dims):
    values = np.random.default_rng(n).normal(size=n)
    msg = Float64MultiArray(data=values.tolist())
    msg.layout.dim = [MultiArrayDimension(label=label, size=size, stride=stride)
                      for label, size, stride in dims]
    msg.layout.data_offset = 3
    raw = serialize_message(msg)
    np.testing.assert_array_equal(read_float64_array(raw), values)
    # in the layout, and in the data (rclpy's serialization can run past the last field)
    cuts = (4, 10) + ((raw.rfind(values.astype("<f8").tobytes()) + 8 * n - 1,) if n else ())
    for cut in cuts:
        with pytest.raises(CdrError):
            read_float64_array(raw[:cut])
    with pytest.raises(CdrError, match="little-endian"):
        read_float64_array(b"\x00\x00" + raw[2:])


@pytest.mark.parametrize("frame_id", ["", "base_link"])
@pytest.mark.parametrize("names", [["j1"], ["joint1", "joint_2", "j3", "a_longer_joint_name"]])
def test_joint_state_writer_matches_rclpy(names, frame_id):
    rng = np.random.default_rng(len(names))
    writer = JointStateWriter(names, frame_id)
    n = len(names)
    for stamp_ns in (0, 98_765_432_101):
        position, velocity, effort = (rng.normal(size=n) for _ in range(3))
        raw = writer.serialize(stamp_ns, position, velocity, effort)
        msg = JointState(name=names, position=position.tolist(), velocity=velocity.tolist(),
                         effort=effort.tolist())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        msg.header.frame_id = frame_id
        assert_rclpy_bytes_with_zero_padding(raw, msg)
        assert JointStateReader().read(raw)[2] == names
    with pytest.raises(ValueError, match="shape"):
        writer.serialize(0, np.zeros(n + 1), np.zeros(n), np.zeros(n))
