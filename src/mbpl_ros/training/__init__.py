"""Training loops: LQR-FLM against the simulator in-process (:mod:`.direct`, ``train``) or through
the ROS 2 node graph (:mod:`.ros_graph`, ``train_ros``); both write the same summary.json."""

from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.direct import train
from mbpl_ros.training.ros_graph import train as train_ros

__all__ = ["TrainConfig", "train", "train_ros"]
