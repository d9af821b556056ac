"""The simulated camera as ROS describes it, and camera frames as the policy reads them (no ROS).

:class:`CameraModel` is what a visuomotor policy depends on besides its weights: the image size,
the vertical field of view and the supersampling (render k times larger, average k x k blocks;
:class:`mbpl_sim.base.SimConfig`). The camera's pose is the URDF's ``camera_optical_frame`` (the
same in every simulator built from that URDF), so it is not part of the model.

The sim bridge advertises its camera as a sensor_msgs/CameraInfo (:func:`camera_info_fields`):
a pinhole camera with square pixels whose *full* (rendered) resolution is ``supersample`` times
the published one, with ``binning_x = binning_y = supersample`` (CameraInfo's binning is exactly
"the published image averages blocks of binning x binning sensor pixels"; K and P describe the
full resolution). :meth:`CameraModel.from_camera_info` reads it back, so an executor can compare
the camera a policy was trained with to the one that feeds it.

:func:`decode_rgb` turns a sensor_msgs/Image's fields into the (H, W, 3) uint8 RGB array the
visuomotor network takes, refusing encodings and sizes it cannot read with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FOVY_TOLERANCE_DEG = 1e-3
"""Two fields of view closer than this are the same camera (CameraInfo stores K in float64)."""
ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
"""sensor_msgs/Image encodings :func:`decode_rgb` reads."""


class FrameError(ValueError):
    """A camera frame that cannot be fed to a policy, with the reason."""


@dataclass(frozen=True)
class CameraModel:
    """A camera as a visuomotor policy sees it."""

    height: int
    """Published image height, px."""
    width: int
    """Published image width, px."""
    fovy_deg: float
    """Vertical field of view, degrees."""
    supersample: int = 1
    """Rendered this many times larger and block-averaged down."""

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1 or self.supersample < 1:
            raise ValueError(f"CameraModel: expected positive size and supersample, found "
                             f"{self.height}x{self.width}, supersample {self.supersample}")
        if not 0 < self.fovy_deg < 180:
            raise ValueError(f"CameraModel: fovy_deg expected in (0, 180), found "
                             f"{self.fovy_deg}")

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the published image."""
        return (self.height, self.width)

    def describe(self) -> str:
        return (f"{self.height}x{self.width} px (HxW), fovy {self.fovy_deg:g} deg, supersample "
                f"{self.supersample}")

    def mismatch(self, other: CameraModel) -> list[str]:
        """The properties in which ``other`` differs (empty: the same camera)."""
        out = []
        if self.image_size != other.image_size:
            out.append("image size")
        if abs(self.fovy_deg - other.fovy_deg) > FOVY_TOLERANCE_DEG:
            out.append("field of view")
        if self.supersample != other.supersample:
            out.append("supersample")
        return out

    @staticmethod
    def from_camera_info(height: int, width: int, k: list[float] | np.ndarray,
                         binning_x: int, binning_y: int) -> CameraModel:
        """The model of a CameraInfo's fields (see the module docstring).

        Raises:
            ValueError: unequal binning, a size that binning does not divide, or no focal length.
        """
        bx, by = max(1, int(binning_x)), max(1, int(binning_y))
        if bx != by or height % by or width % bx:
            raise ValueError(f"camera_info: expected equal binning dividing the size, found "
                             f"{height}x{width} binned {by}x{bx}")
        fy = float(np.asarray(k, dtype=float).reshape(9)[4])
        if not fy > 0:
            raise ValueError(f"camera_info: expected a positive focal length K[1,1], found {fy}")
        fovy = math.degrees(2.0 * math.atan(0.5 * height / fy))
        return CameraModel(height // by, width // bx, fovy, bx)


def camera_info_fields(camera: CameraModel) -> dict:
    """CameraInfo fields (height, width, k, p, r, d, distortion_model, binning_x, binning_y) of
    ``camera``: full resolution in K and P, the supersampling as binning."""
    k = camera.supersample
    height, width = camera.height * k, camera.width * k
    f = 0.5 * height / math.tan(math.radians(camera.fovy_deg) / 2.0)
    cx, cy = 0.5 * width, 0.5 * height
    return {"height": height, "width": width, "distortion_model": "plumb_bob",
            "d": [0.0] * 5, "k": [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
            "binning_x": k, "binning_y": k}


def decode_rgb(height: int, width: int, encoding: str, step: int, data,
               expected: tuple[int, int] | None = None) -> np.ndarray:
    """An Image's pixels as a (height, width, 3) uint8 RGB array (a copy).

    Args:
        height, width, encoding, step, data: the sensor_msgs/Image fields (``data``: bytes,
            bytearray, array or a sequence of ints).
        expected: the (height, width) the consumer needs, checked first.

    Raises:
        FrameError: another size than ``expected``, an encoding not in :data:`ENCODINGS`, or
            fewer bytes than the rows need.
    """
    if expected is not None and (height, width) != tuple(expected):
        raise FrameError(f"camera frame of {height}x{width} px (HxW); the policy expects "
                         f"{expected[0]}x{expected[1]}")
    if encoding not in ENCODINGS:
        raise FrameError(f"camera frame encoding {encoding!r}: expected one of {ENCODINGS}")
    channels = 4 if encoding.endswith("a8") else 3
    if height < 1 or width < 1 or step < width * channels:
        raise FrameError(f"camera frame: step {step} B is less than {width} px x {channels} B "
                         f"(or an empty image, {height}x{width})")
    try:
        buffer = np.frombuffer(data, dtype=np.uint8)  # bytes, array.array('B'), numpy
    except TypeError:
        buffer = np.asarray(data, dtype=np.uint8)  # a list of ints
    if buffer.size < step * height:
        raise FrameError(f"camera frame: expected {step * height} B ({height} rows of {step} B), "
                         f"found {buffer.size}")
    rows = buffer[:step * height].reshape(height, step)[:, :width * channels]
    pixels = rows.reshape(height, width, channels)[..., :3]
    if encoding.startswith("bgr"):
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray(pixels)
