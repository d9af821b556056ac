# The simulated mbpl_ros stack on a ROS 2 Kilted installation.
#   docker build -t mbpl_ros . && docker run --rm mbpl_ros
FROM ros:kilted-ros-base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV MUJOCO_GL=egl \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1

# Mesa EGL for offscreen MuJoCo rendering; the ROS messages the nodes use come from apt here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3-pip libegl1 libgl1-mesa-dri \
        ros-kilted-std-srvs ros-kilted-sensor-msgs ros-kilted-rosgraph-msgs \
        ros-kilted-launch-ros ros-kilted-launch-testing ros-kilted-launch-testing-ament-cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mbpl_ros
COPY requirements.txt pyproject.toml ./
RUN python3 -m pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -r requirements.txt
COPY ros2_ws/src ros2_ws/src
WORKDIR /opt/mbpl_ros/ros2_ws
RUN . /opt/ros/kilted/setup.sh && colcon build --merge-install
WORKDIR /opt/mbpl_ros
COPY src src
COPY sim sim
COPY urdf urdf
COPY config config
COPY launch launch
RUN python3 -m pip install --no-deps -e . \
    && printf '%s\n' '. /opt/ros/kilted/setup.sh' \
        '. /opt/mbpl_ros/ros2_ws/install/setup.sh' > /opt/mbpl_ros/env.sh
CMD ["bash", "-c", ". /opt/mbpl_ros/env.sh && ros2 launch launch/sim.launch.py"]
