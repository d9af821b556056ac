"""Fast paths between serialized messages and numpy for the 1 kHz loops.

rclpy turns a taken message into Python objects through property setters that type-check every
field: about 60 µs for a 7-float Float64MultiArray on this machine, and as much again to publish
one. At 1 kHz that is a tenth of a core spent holding the interpreter. The loops instead take the
serialized bytes (``take_message(..., raw=True)``, ``publish(bytes)``) and use the readers and
writers here, which cover exactly the messages on the loops' paths (the executor's and the sim
bridge's).

Only classic little-endian CDR (the encapsulation Fast DDS and Cyclone DDS use for ROS 2 topics) is
handled; anything else raises :class:`CdrError`, so a caller can fall back to rclpy's converter.
The layout rules followed: primitives are aligned to their size, counted from the end of the
4-byte encapsulation header; a sequence is a uint32 count followed by its elements; a string is a
uint32 length including the terminating NUL, then the characters.
"""

from __future__ import annotations

import struct

import numpy as np

ENCAPSULATION_HEADER = 4
CDR_LITTLE_ENDIAN = b"\x00\x01"
_STAMP = struct.Struct("<iI")
_UINT32 = struct.Struct("<I")


class CdrError(ValueError):
    """Serialized bytes this module cannot read (other encoding, truncated, inconsistent)."""


def _check_encapsulation(raw: bytes) -> None:
    if len(raw) < ENCAPSULATION_HEADER + 8:
        raise CdrError(f"serialized message of {len(raw)} bytes is too short for a header")
    if raw[:2] != CDR_LITTLE_ENDIAN:
        raise CdrError(f"encapsulation {raw[:2].hex()}: only little-endian CDR (0001) is read")


def header_stamp_ns(raw: bytes) -> int:
    """The header stamp (ns) of a serialized message whose first field is std_msgs/Header."""
    _check_encapsulation(raw)
    sec, nanosec = _STAMP.unpack_from(raw, ENCAPSULATION_HEADER)
    return sec * 1_000_000_000 + nanosec


class _Reader:
    """Cursor over one serialized message's payload."""

    def __init__(self, raw: bytes) -> None:
        _check_encapsulation(raw)
        self.raw = raw
        self.pos = 0  # payload offset: alignment counts from here

    def _align(self, size: int) -> None:
        self.pos += -self.pos % size

    def _need(self, size: int) -> int:
        start = ENCAPSULATION_HEADER + self.pos
        if start + size > len(self.raw):
            raise CdrError(f"truncated message: {size} bytes needed at payload offset "
                           f"{self.pos}, {len(self.raw) - start} left")
        return start

    def uint32(self) -> int:
        self._align(4)
        (value,) = _UINT32.unpack_from(self.raw, self._need(4))
        self.pos += 4
        return value

    def string(self) -> bytes:
        length = self.uint32()
        start = self._need(length)
        self.pos += length
        return self.raw[start:start + max(length - 1, 0)]

    def header(self) -> tuple[int, bytes]:
        """std_msgs/Header: (stamp in ns, frame_id as raw bytes, decoded only by who needs it)."""
        sec, nanosec = _STAMP.unpack_from(self.raw, self._need(8))
        self.pos += 8
        return sec * 1_000_000_000 + nanosec, self.string()

    def string_sequence_block(self) -> bytes:
        """The raw bytes of a sequence of strings (count, then length-prefixed strings): equal
        bytes mean equal strings, so a reader can decode them only when they change."""
        self._align(4)
        start = self.pos
        count = self.uint32()
        for _ in range(count):
            length = self.uint32()
            self._need(length)
            self.pos += length
        return self.raw[ENCAPSULATION_HEADER + start:ENCAPSULATION_HEADER + self.pos]

    def float64_sequence(self) -> np.ndarray:
        count = self.uint32()
        if count == 0:
            return np.empty(0)
        self._align(8)
        start = self._need(8 * count)
        self.pos += 8 * count
        return np.frombuffer(self.raw, dtype="<f8", count=count, offset=start)


def read_arm_state(raw: bytes) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A serialized mbpl_interfaces/ArmState as (stamp_ns, x, joint_positions, joint_velocities,
    target_position); the arrays are read-only views of ``raw``. (One message: a stream is read
    faster by one :class:`ArmStateReader`.)"""
    return ArmStateReader().read(raw)


class ArmStateReader:
    """Reads serialized mbpl_interfaces/ArmState messages (as :func:`read_arm_state` describes),
    fast for a stream of messages of one shape (one frame id length, the same array sizes), as
    the control loop takes 1000 times a second.

    The first message is parsed field by field and its layout (where the counts and arrays sit)
    kept; a later message of the same length is read with one struct call, which also returns its
    frame id length and array counts: if they match, the arrays are read at the kept offsets,
    otherwise the message is parsed again and its layout kept instead. The same bytes are checked
    either way, so both paths accept and refuse the same messages.
    """

    def __init__(self) -> None:
        self._size = -1
        self._struct: struct.Struct | None = None
        self._shape: tuple[int, ...] = ()
        self._words = 0
        self._arrays: tuple[tuple[int, int], ...] = ()  # x, q, qd, target: slices of the words

    def read(self, raw: bytes) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if len(raw) == self._size and raw[:2] == CDR_LITTLE_ENDIAN:
            sec, nanosec, *shape = self._struct.unpack_from(raw, ENCAPSULATION_HEADER)
            if tuple(shape) == self._shape:
                # the arrays are 8-aligned in the payload: one view of its 8-byte words, sliced
                words = np.frombuffer(raw, dtype="<f8", count=self._words,
                                      offset=ENCAPSULATION_HEADER)
                x, q, qd, target = (words[start:stop] for start, stop in self._arrays)
                return sec * 1_000_000_000 + nanosec, x, q, qd, target
        return self._learn(raw)

    def _learn(self, raw: bytes) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        reader = _Reader(raw)
        stamp_ns, _ = reader.header()
        fields, covered = "<iII", 12  # stamp and the frame id's length, payload offsets 0-12
        shape, arrays, values = [reader.pos - covered], [], []  # the length read
        for _ in range(4):
            reader._align(4)
            fields += f"{reader.pos - covered}xI"
            covered = reader.pos + 4
            value = reader.float64_sequence()
            values.append(value)
            shape.append(value.size)
            stop = reader.pos // 8 if value.size else 0
            arrays.append((stop - value.size, stop))
        self._size = len(raw)
        self._words = (len(raw) - ENCAPSULATION_HEADER) // 8
        self._struct = struct.Struct(fields)
        self._shape = tuple(shape)
        self._arrays = tuple(arrays)
        return (stamp_ns, *values)


def read_float64_array(raw: bytes) -> np.ndarray:
    """The data of a serialized std_msgs/Float64MultiArray (its layout is read past, not
    interpreted), as a read-only view of ``raw``."""
    return _walk_float64_array(_Reader(raw))


def decode_string_sequence(block: bytes) -> list[str]:
    """The strings of a block from :meth:`_Reader.string_sequence_block` (which starts 4-byte
    aligned, so alignment inside it is the message's)."""
    (count,) = _UINT32.unpack_from(block, 0)
    pos, strings = 4, []
    for _ in range(count):
        pos += -pos % 4
        (length,) = _UINT32.unpack_from(block, pos)
        strings.append(block[pos + 4:pos + 3 + length].decode())
        pos += 4 + length
    return strings


class JointStateReader:
    """Reads serialized sensor_msgs/JointState messages; decodes the joint names only when their
    bytes differ from the previous message's (a driver sends the same names every time)."""

    def __init__(self) -> None:
        self._block: bytes | None = None
        self._names: list[str] = []

    def read(self, raw: bytes) -> tuple[int, str, list[str], np.ndarray, np.ndarray]:
        """(stamp_ns, frame_id, names, position, velocity); effort is not read."""
        reader = _Reader(raw)
        stamp_ns, frame = reader.header()
        block = reader.string_sequence_block()
        if block != self._block:
            self._names, self._block = decode_string_sequence(block), block
        position = reader.float64_sequence()
        velocity = reader.float64_sequence()
        return stamp_ns, frame.decode(), self._names, position, velocity


def _template(msg, arrays: list[np.ndarray], walk) -> tuple[bytearray, list[int]]:
    """rclpy's serialization of ``msg`` (whose float64 arrays hold ``arrays``, distinct values
    found nowhere else), with the bytes ``walk`` does not read zeroed (see :func:`_zero_padding`),
    and the byte offset of each array in it."""
    from rclpy.serialization import serialize_message

    raw = _zero_padding(serialize_message(msg), walk)
    offsets = []
    for a in arrays:
        start = raw.find(a.astype("<f8").tobytes()) if a.size else -1
        if a.size and start < 0:
            raise CdrError("an array is not stored contiguously in rclpy's serialization")
        offsets.append(start)
    return bytearray(raw), offsets


class _SpanRecorder(_Reader):
    """A :class:`_Reader` that records which bytes its reads covered."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        self.meaningful = bytearray(len(raw))
        self.meaningful[:ENCAPSULATION_HEADER] = b"\x01" * ENCAPSULATION_HEADER

    def _need(self, size: int) -> int:
        start = super()._need(size)
        self.meaningful[start:start + size] = b"\x01" * size
        return start


def _zero_padding(raw: bytes, walk) -> bytearray:
    """``raw`` with zeros in every byte that ``walk`` (reading the message's fields from a
    :class:`_SpanRecorder`) did not read.

    Fast CDR skips alignment padding without writing it, and rmw's serialized length can run past
    the last field, so rclpy's serialization carries whatever its buffer held in those bytes; a
    template copied from it would send them with every message.
    """
    recorder = _SpanRecorder(raw)
    walk(recorder)
    return bytearray(b if keep else 0 for b, keep in zip(raw, recorder.meaningful, strict=True))


def _markers(*sizes: int) -> list[np.ndarray]:
    total = sum(sizes)
    values = 1.0 + np.arange(total) / (total + 1.0)
    return np.split(values, np.cumsum(sizes)[:-1])


def _walk_arm_state(reader: _Reader) -> None:
    reader.header()
    for _ in range(4):  # x, joint_positions, joint_velocities, target_position
        reader.float64_sequence()


def _walk_joint_state(reader: _Reader) -> None:
    reader.header()
    reader.string_sequence_block()  # name
    for _ in range(3):  # position, velocity, effort
        reader.float64_sequence()


def _walk_float64_array(reader: _Reader) -> np.ndarray:
    """std_msgs/Float64MultiArray: past the layout to the data, which it returns."""
    for _ in range(reader.uint32()):  # layout.dim: label, size, stride
        reader.string()
        reader.uint32()
        reader.uint32()
    reader.uint32()  # layout.data_offset
    return reader.float64_sequence()


class ArmStateWriter:
    """Serializes mbpl_interfaces/ArmState messages of one arm (``n`` joints, state dimension
    ``dX``) by writing stamp and arrays into templates that rclpy's serializer produced (one per
    frame id and per with/without x)."""

    def __init__(self, n: int, dX: int) -> None:
        self.n, self.dX = n, dX
        self._templates: dict[tuple[str, bool], tuple[bytearray, list[int]]] = {}

    def _template_for(self, frame_id: str, with_x: bool) -> tuple[bytearray, list[int]]:
        key = (frame_id, with_x)
        if key not in self._templates:
            from mbpl_interfaces.msg import ArmState

            x, q, qd, target = _markers(self.dX if with_x else 0, self.n, self.n,
                                        3 if with_x else 0)
            msg = ArmState(x=x.tolist(), joint_positions=q.tolist(),
                           joint_velocities=qd.tolist(), target_position=target.tolist())
            msg.header.frame_id = frame_id
            self._templates[key] = _template(msg, [x, q, qd, target], _walk_arm_state)
        return self._templates[key]

    def serialize(self, stamp_ns: int, frame_id: str, q: np.ndarray, qd: np.ndarray,
                  x: np.ndarray | None = None, target: np.ndarray | None = None) -> bytes:
        """x and target both given (the full state) or both None (no target yet)."""
        if (x is None) != (target is None):
            raise ValueError("x and target: expected both or neither")
        with_x = x is not None
        shapes = ((self.dX,), (self.n,), (self.n,), (3,))
        arrays = (x, q, qd, target)
        buf, offsets = self._template_for(frame_id, with_x)
        buf = bytearray(buf)
        _STAMP.pack_into(buf, ENCAPSULATION_HEADER, *divmod(stamp_ns, 1_000_000_000))
        for a, shape, start in zip(arrays, shapes, offsets, strict=True):
            if a is None:
                continue
            if a.shape != shape:
                raise ValueError(f"ArmState array: expected shape {shape}, found {a.shape}")
            buf[start:start + 8 * a.size] = a.astype("<f8", copy=False).tobytes()
        return bytes(buf)


class JointStateWriter:
    """Serializes sensor_msgs/JointState messages of fixed joint names and frame id, with all of
    position, velocity and effort, by writing stamp and arrays into a template that rclpy's
    serializer produced once."""

    def __init__(self, names: list[str], frame_id: str = "") -> None:
        from sensor_msgs.msg import JointState

        if not names:
            raise ValueError("names: expected at least one joint")
        self.n = len(names)
        position, velocity, effort = _markers(self.n, self.n, self.n)
        msg = JointState(name=list(names), position=position.tolist(),
                         velocity=velocity.tolist(), effort=effort.tolist())
        msg.header.frame_id = frame_id
        self._template, self._offsets = _template(msg, [position, velocity, effort],
                                                  _walk_joint_state)

    def serialize(self, stamp_ns: int, position: np.ndarray, velocity: np.ndarray,
                  effort: np.ndarray) -> bytes:
        buf = bytearray(self._template)
        _STAMP.pack_into(buf, ENCAPSULATION_HEADER, *divmod(stamp_ns, 1_000_000_000))
        for a, start in zip((position, velocity, effort), self._offsets, strict=True):
            if a.shape != (self.n,):
                raise ValueError(f"JointState array: expected shape ({self.n},), found {a.shape}")
            buf[start:start + 8 * self.n] = a.astype("<f8", copy=False).tobytes()
        return bytes(buf)


class Float64ArrayWriter:
    """Serializes std_msgs/Float64MultiArray messages of ``n`` values (empty layout) by writing
    the values into a template that rclpy's own serializer produced once."""

    def __init__(self, n: int) -> None:
        from std_msgs.msg import Float64MultiArray

        if n < 1:
            raise ValueError(f"n: expected >= 1 values, found {n}")
        (marker,) = _markers(n)
        template, (start,) = _template(Float64MultiArray(data=marker.tolist()), [marker],
                                       _walk_float64_array)
        self.n = n
        self._prefix = bytes(template[:start])
        self._suffix = bytes(template[start + 8 * n:])

    def serialize(self, values: np.ndarray) -> bytes:
        if values.shape != (self.n,):
            raise ValueError(f"values: expected shape ({self.n},), found {values.shape}")
        return self._prefix + values.astype("<f8", copy=False).tobytes() + self._suffix
