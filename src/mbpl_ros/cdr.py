"""Fast paths between serialized messages and numpy for the 1 kHz loops.

rclpy turns a taken message into Python objects through property setters that type-check every
field: about 60 µs for a 7-float Float64MultiArray on this machine, and as much again to publish
one. At 1 kHz that is a tenth of a core spent holding the interpreter. The loops instead take the
serialized bytes (``take_message(..., raw=True)``, ``publish(bytes)``) and use the two readers and
the one writer here, which cover exactly the messages on the loop's path.

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

    def skip_header(self) -> int:
        """std_msgs/Header: returns the stamp in ns, skips frame_id."""
        sec, nanosec = _STAMP.unpack_from(self.raw, self._need(8))
        self.pos += 8
        length = self.uint32()
        self._need(length)
        self.pos += length
        return sec * 1_000_000_000 + nanosec

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
    target_position); the arrays are read-only views of ``raw``."""
    reader = _Reader(raw)
    stamp_ns = reader.skip_header()
    x = reader.float64_sequence()
    q = reader.float64_sequence()
    qd = reader.float64_sequence()
    target = reader.float64_sequence()
    return stamp_ns, x, q, qd, target


class Float64ArrayWriter:
    """Serializes std_msgs/Float64MultiArray messages of ``n`` values (empty layout) by writing
    the values into a template that rclpy's own serializer produced once."""

    def __init__(self, n: int) -> None:
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Float64MultiArray

        if n < 1:
            raise ValueError(f"n: expected >= 1 values, found {n}")
        marker = 1.0 + np.arange(n) / (n + 1.0)  # values found nowhere else in the template
        template = serialize_message(Float64MultiArray(data=marker.tolist()))
        if template[:2] != CDR_LITTLE_ENDIAN:
            raise CdrError(f"rclpy serialized with encapsulation {template[:2].hex()}, not "
                           "little-endian CDR")
        start = template.find(marker.astype("<f8").tobytes())
        if start < 0:
            raise CdrError("the values are not stored contiguously in rclpy's serialization")
        self.n = n
        self._prefix = bytes(template[:start])
        self._suffix = bytes(template[start + 8 * n:])

    def serialize(self, values: np.ndarray) -> bytes:
        if values.shape != (self.n,):
            raise ValueError(f"values: expected shape ({self.n},), found {values.shape}")
        return self._prefix + values.astype("<f8", copy=False).tobytes() + self._suffix
