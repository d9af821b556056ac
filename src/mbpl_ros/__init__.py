"""mbpl_ros: model-based policy learning for robot arms on ROS 2."""

__version__ = "0.1.0"
