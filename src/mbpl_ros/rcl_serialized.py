"""Take and publish serialized messages through rcl with the interpreter released.

rclpy's ``take_message(..., raw=True)`` and ``publish(bytes)`` hold the interpreter for the whole
DDS call. When the call waits on a lock inside Fast DDS (a reader's, while its reception thread
stores the next message; a writer's, while its event thread sends a heartbeat) every Python
thread waits with it, the 1 kHz loop included. These two classes make the same rcl calls
(``rcl_take_serialized_message``, ``rcl_publish_serialized_message``) through ctypes, which
releases the interpreter for the duration of a foreign call, so only the thread that takes or
publishes waits.

Both keep the rclpy entity they were made from in use (its handle's context manager) until
:meth:`close`, so rclpy cannot destroy it under a call.
"""

from __future__ import annotations

import ctypes
import struct

RCL_RET_OK = 0
RCL_RET_SUBSCRIPTION_TAKE_FAILED = 401
_MESSAGE_INFO_SIZE = 256  # rmw_message_info_t is ~64 bytes; room for future fields
_RECEIVED_TIMESTAMP = struct.Struct("<q")  # rmw_message_info_t.received_timestamp, offset 8


class RclError(RuntimeError):
    """An rcl call failed (the message is rcl's error string)."""


class _Allocator(ctypes.Structure):
    _fields_ = [("allocate", ctypes.c_void_p), ("deallocate", ctypes.c_void_p),
                ("reallocate", ctypes.c_void_p), ("zero_allocate", ctypes.c_void_p),
                ("state", ctypes.c_void_p)]


class _Uint8Array(ctypes.Structure):
    """rcutils_uint8_array_t, which rcl_serialized_message_t is."""

    _fields_ = [("buffer", ctypes.POINTER(ctypes.c_uint8)), ("buffer_length", ctypes.c_size_t),
                ("buffer_capacity", ctypes.c_size_t), ("allocator", _Allocator)]


class _ErrorString(ctypes.Structure):
    _fields_ = [("str", ctypes.c_char * 1024)]


class _Libraries:
    """librcl and librcutils as rclpy loaded them, with the prototypes used here."""

    def __init__(self) -> None:
        import rclpy  # noqa: F401  (loads librcl and librcutils into the process)

        rcl, rcutils = ctypes.CDLL("librcl.so"), ctypes.CDLL("librcutils.so")
        self.take = rcl.rcl_take_serialized_message
        self.take.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Uint8Array), ctypes.c_void_p,
                              ctypes.c_void_p]
        self.take.restype = ctypes.c_int
        self.publish = rcl.rcl_publish_serialized_message
        self.publish.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Uint8Array), ctypes.c_void_p]
        self.publish.restype = ctypes.c_int
        self.default_allocator = rcutils.rcutils_get_default_allocator
        self.default_allocator.restype = _Allocator
        self.array_init = rcutils.rcutils_uint8_array_init
        self.array_init.argtypes = [ctypes.POINTER(_Uint8Array), ctypes.c_size_t,
                                    ctypes.POINTER(_Allocator)]
        self.array_init.restype = ctypes.c_int
        self.array_fini = rcutils.rcutils_uint8_array_fini
        self.array_fini.argtypes = [ctypes.POINTER(_Uint8Array)]
        self.array_fini.restype = ctypes.c_int
        self.error_string = rcutils.rcutils_get_error_string
        self.error_string.restype = _ErrorString
        self.reset_error = rcutils.rcutils_reset_error
        self.reset_error.restype = None

    def fail(self, what: str, ret: int) -> RclError:
        message = self.error_string().str.decode(errors="replace")
        self.reset_error()
        return RclError(f"{what} failed ({ret}): {message}")


_libs: _Libraries | None = None


def _libraries() -> _Libraries:
    global _libs
    if _libs is None:
        _libs = _Libraries()
    return _libs


class SerializedTaker:
    """Takes serialized messages from one rclpy subscription (whose own callback is never run:
    no executor should spin its node)."""

    def __init__(self, subscription, capacity: int = 1024) -> None:
        self._libs = _libraries()
        self._handle = subscription.handle
        self._handle.__enter__()
        self._pointer = self._handle.pointer
        self._message = _Uint8Array()
        allocator = self._libs.default_allocator()
        ret = self._libs.array_init(ctypes.byref(self._message), capacity, ctypes.byref(allocator))
        if ret != RCL_RET_OK:
            self._handle.__exit__(None, None, None)
            raise self._libs.fail("rcutils_uint8_array_init", ret)
        self._info = ctypes.create_string_buffer(_MESSAGE_INFO_SIZE)

    def take(self) -> tuple[bytes, int] | None:
        """The oldest message waiting, as (bytes, received timestamp in ns on the system clock),
        or None if none is."""
        if self._pointer is None:
            raise RclError("take after close")
        ret = self._libs.take(self._pointer, ctypes.byref(self._message), self._info, None)
        if ret == RCL_RET_SUBSCRIPTION_TAKE_FAILED:
            return None
        if ret != RCL_RET_OK:
            raise self._libs.fail("rcl_take_serialized_message", ret)
        raw = ctypes.string_at(self._message.buffer, self._message.buffer_length)
        (received_ns,) = _RECEIVED_TIMESTAMP.unpack_from(self._info, 8)
        return raw, received_ns

    def close(self) -> None:
        if self._pointer is not None:
            self._pointer = None
            self._libs.array_fini(ctypes.byref(self._message))
            self._handle.__exit__(None, None, None)


class SerializedPublisher:
    """Publishes serialized messages (bytes, as rclpy's ``serialize_message`` makes them) on one
    rclpy publisher."""

    def __init__(self, publisher) -> None:
        self._libs = _libraries()
        self._handle = publisher.handle
        self._handle.__enter__()
        self._pointer = self._handle.pointer
        self._message = _Uint8Array()  # points into the bytes being published, never owns them

    def publish(self, raw: bytes) -> None:
        if self._pointer is None:
            raise RclError("publish after close")
        buffer = ctypes.cast(ctypes.c_char_p(raw), ctypes.POINTER(ctypes.c_uint8))
        self._message.buffer = buffer
        self._message.buffer_length = self._message.buffer_capacity = len(raw)
        ret = self._libs.publish(self._pointer, ctypes.byref(self._message), None)
        self._message.buffer = None  # `raw` may be freed once this returns
        if ret != RCL_RET_OK:
            raise self._libs.fail("rcl_publish_serialized_message", ret)

    def close(self) -> None:
        if self._pointer is not None:
            self._pointer = None
            self._handle.__exit__(None, None, None)
