"""Domain exceptions of the simulation stand-in."""


class SimError(Exception):
    """Base class of every error raised by :mod:`mbpl_sim`."""


class UrdfError(SimError, ValueError):
    """The URDF cannot be used as a serial arm (missing file or link, unsupported joint, ...)."""


class TaskError(SimError, ValueError):
    """A task or condition is invalid for the arm it is used with."""
