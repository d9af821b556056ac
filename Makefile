# Two commands for a newcomer: `make demo` (the main job) and `make test` (the whole suite).
# Both run `make setup` first, which is idempotent and quiet once done.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
ROS_ENV := AMENT_PREFIX_PATH=$(VENV) CMAKE_PREFIX_PATH=$(VENV) MUJOCO_GL=egl
INTERFACES := $(shell find ros2_ws/src -type f -not -path '*/__pycache__/*')

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-ros.txt pyproject.toml $(INTERFACES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-ros.txt -r requirements.txt 2>&1 \
		| { grep -v "is ignored: it is neither" || true; }; exit $${PIPESTATUS[0]}
	@$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
		| { grep -v "is ignored: it is neither" || true; }; exit $${PIPESTATUS[0]}
	@echo "building ros2_ws (mbpl_interfaces) with colcon ..."
	@rm -rf ros2_ws/build
	@cd ros2_ws && $(ROS_ENV) $(BIN)/colcon --log-base log build --merge-install --install-base $(VENV) \
		--build-base build --event-handlers console_cohesion- summary- \
		> log-build.txt 2>&1 || { cat log-build.txt; exit 1; }
	@$(ROS_ENV) $(BIN)/python -c "import rclpy, mbpl_interfaces.msg, mujoco, pybullet, pinocchio, torch, mbpl_ros" \
		|| { echo "set-up check failed"; exit 1; }
	@touch $(STAMP)
	@echo "set-up done: $(VENV)"

demo: setup
	@$(ROS_ENV) $(BIN)/mbpl demo

test: setup
	@$(ROS_ENV) $(BIN)/python -m pytest -q

lint: setup
	@$(BIN)/ruff check src sim tests launch

clean:
	rm -rf $(VENV) ros2_ws/build ros2_ws/log ros2_ws/log-build.txt
