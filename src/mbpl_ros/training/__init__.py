"""Training loops: LQR-FLM against the simulator in-process (direct)."""

from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.direct import train

__all__ = ["TrainConfig", "train"]
