"""What the simulators need to know about a serial arm, read from its URDF.

The URDF is parsed with :mod:`xml.etree` on purpose: the two engines and pinocchio each parse the
same file with their own parser, and the tests check that they all agree with this description.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbpl_sim.errors import UrdfError

ACTUATED_JOINT_TYPES = ("revolute", "prismatic")
"""URDF joint types that become one actuated degree of freedom."""


@dataclass(frozen=True)
class ArmDescription:
    """A serial arm: the actuated joints on the chain from the root link to ``ee_link``.

    Attributes:
        urdf_path: absolute path of the URDF file.
        ee_link: name of the end-effector link whose frame the task tracks.
        root_link: the URDF root link (fixed to the world at the origin).
        joint_names: the actuated joints in chain order, base to end effector (n,).
        lower: lower position limits (n,), rad or m.
        upper: upper position limits (n,), rad or m.
        velocity_limits: velocity limits (n,), rad/s or m/s.
        effort_limits: effort limits (n,), N m or N; commanded torques are clamped to them.
        damping: viscous joint damping from ``<dynamics damping>`` (n,), N m s/rad or N s/m.
        massless_links: links without ``<inertial>``; massless by the URDF convention (as in
            pinocchio), so the backends zero the mass that MuJoCo (from geometry) and PyBullet
            (1 kg) would otherwise give them.
    """

    urdf_path: Path
    ee_link: str
    root_link: str
    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity_limits: np.ndarray
    effort_limits: np.ndarray
    damping: np.ndarray
    massless_links: tuple[str, ...] = ()

    @property
    def n_joints(self) -> int:
        """Number of actuated joints n."""
        return len(self.joint_names)

    @classmethod
    def from_urdf(cls, urdf_path: str | Path, ee_link: str) -> ArmDescription:
        """Read the serial chain that ends at ``ee_link`` from a URDF file.

        Only serial arms are accepted: every revolute or prismatic joint of the URDF must lie on the
        chain from the root link to ``ee_link`` (a joint off that chain would be left unactuated by
        the simulators, so it is rejected rather than ignored). Fixed joints may appear anywhere.

        Raises:
            UrdfError: missing or malformed file, unknown ``ee_link`` (the message lists the links),
                continuous/floating/planar joints, movable joints off the chain, missing limits.
        """
        path = Path(urdf_path).expanduser().resolve()
        if not path.is_file():
            raise UrdfError(f"URDF file not found: expected an existing file, found no {path}")
        try:
            robot = ET.parse(path).getroot()
        except ET.ParseError as err:
            raise UrdfError(f"{path} is not well-formed XML: {err}") from err
        if robot.tag != "robot":
            raise UrdfError(f"{path}: expected a <robot> root element, found <{robot.tag}>")

        links = [link.get("name") for link in robot.findall("link")]
        if ee_link not in links:
            raise UrdfError(
                f"{path.name}: end-effector link {ee_link!r} not found; "
                f"available links: {', '.join(links)}"
            )
        joints = robot.findall("joint")
        joint_by_child = {j.find("child").get("link"): j for j in joints}
        roots = [name for name in links if name not in joint_by_child]
        if len(roots) != 1:
            raise UrdfError(f"{path.name}: expected exactly one root link, found {roots}")

        chain: list[ET.Element] = []
        link = ee_link
        while link in joint_by_child:
            joint = joint_by_child[link]
            chain.append(joint)
            link = joint.find("parent").get("link")
        chain.reverse()

        chain_names = {j.get("name") for j in chain}
        for joint in joints:
            jtype = joint.get("type")
            if jtype == "fixed":
                continue
            if jtype not in ACTUATED_JOINT_TYPES:
                raise UrdfError(
                    f"{path.name}: joint {joint.get('name')!r} has type {jtype!r}; "
                    f"expected one of {ACTUATED_JOINT_TYPES} or 'fixed'"
                )
            if joint.get("name") not in chain_names:
                raise UrdfError(
                    f"{path.name}: movable joint {joint.get('name')!r} is not on the chain from "
                    f"{roots[0]!r} to {ee_link!r}; only serial arms are supported"
                )

        actuated = [j for j in chain if j.get("type") in ACTUATED_JOINT_TYPES]
        if not actuated:
            raise UrdfError(f"{path.name}: no revolute or prismatic joint between the root and "
                            f"{ee_link!r}")
        rows = [_joint_row(path, j) for j in actuated]
        columns = np.array(rows, dtype=float).T
        return cls(
            urdf_path=path,
            ee_link=ee_link,
            root_link=roots[0],
            joint_names=tuple(j.get("name") for j in actuated),
            lower=columns[0],
            upper=columns[1],
            velocity_limits=columns[2],
            effort_limits=columns[3],
            damping=columns[4],
            massless_links=tuple(
                link.get("name") for link in robot.findall("link") if link.find("inertial") is None
            ),
        )

    def check_positions(self, q: np.ndarray, name: str = "joint positions") -> np.ndarray:
        """Return ``q`` as a float array after checking its shape (n,), finiteness and limits.

        Raises:
            ValueError: wrong shape, non-finite entries, or entries outside [lower, upper].
        """
        q = check_vector(q, self.n_joints, name)
        outside = (q < self.lower) | (q > self.upper)
        if outside.any():
            bad = [self.joint_names[i] for i in np.flatnonzero(outside)]
            raise ValueError(f"{name} outside the URDF limits for joints {bad}: "
                             f"expected within [{self.lower}, {self.upper}], found {q}")
        return q


def check_vector(value, size: int, name: str) -> np.ndarray:
    """Return ``value`` as a finite float vector of shape (size,), else raise ``ValueError``."""
    arr = np.asarray(value, dtype=float)
    if arr.shape != (size,):
        raise ValueError(f"{name}: expected shape ({size},), found {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, found {arr}")
    return arr.copy()


def _joint_row(path: Path, joint: ET.Element) -> tuple[float, float, float, float, float]:
    """(lower, upper, velocity, effort, damping) of an actuated URDF joint."""
    name = joint.get("name")
    limit = joint.find("limit")
    if limit is None:
        raise UrdfError(f"{path.name}: joint {name!r} has no <limit>; expected lower, upper, "
                        "velocity and effort")
    values = []
    for key in ("lower", "upper", "velocity", "effort"):
        text = limit.get(key)
        if text is None:
            raise UrdfError(f"{path.name}: joint {name!r} <limit> lacks {key!r}")
        values.append(float(text))
    lower, upper, velocity, effort = values
    if not lower < upper or velocity <= 0 or effort <= 0:
        raise UrdfError(f"{path.name}: joint {name!r} limits must satisfy lower < upper and "
                        f"velocity, effort > 0; found {values}")
    dynamics = joint.find("dynamics")
    damping = float(dynamics.get("damping", 0.0)) if dynamics is not None else 0.0
    return lower, upper, velocity, effort, damping
