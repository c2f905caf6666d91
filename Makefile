# rackpower: `make demo` and `make test` set up whatever is missing first.
# Set-up is idempotent: a stamp per step, redone only when its inputs change.

PYTHON ?= python3.11
VENV ?= .venv
BUILD ?= build/cmake
PY := $(VENV)/bin/python
APT_PACKAGES := cmake g++ make prometheus-node-exporter mbpoll slurmctld slurmd slurm-client munge \
  slurmrestd curl prometheus
STAMPS := $(VENV)/.rackpower
ROS2_TOOLS ?= ../shared/ros2-tools

MSG_FILES := $(wildcard msg/*.msg)
PKG_SOURCES := $(shell find rackpower_nodes launch config -type f -not -name '*.pyc' 2>/dev/null)

.PHONY: setup test demo bench colcon clean distclean

setup: $(STAMPS)/installed $(STAMPS)/ros2-tools

$(STAMPS)/apt: Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: requirements.txt | $(STAMPS)/apt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -r requirements.txt
	@mkdir -p $(STAMPS) && touch $@

# Messages, Python package, executables, launch and config files, installed into the venv prefix
# (the ament index then lists rackpower and lib/rackpower/<node> exists).
$(STAMPS)/installed: $(STAMPS)/venv CMakeLists.txt package.xml setup.cfg \
		cmake/rackpower_wheel_includes.cmake $(MSG_FILES) $(PKG_SOURCES)
	env AMENT_PREFIX_PATH=$(abspath $(VENV)) CMAKE_PREFIX_PATH=$(abspath $(VENV)) \
	  cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=OFF --log-level=WARNING
	@# its ~140 lines (make's directories, setuptools' notices) shown only when it fails
	cmake --build $(BUILD) -j 2 >$(BUILD)/build.log 2>&1 || { cat $(BUILD)/build.log; exit 1; }
	@# a module moved or removed in the tree must not live on in the installed copy
	rm -rf "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/rackpower_nodes"
	cmake --install $(BUILD) >/dev/null
	@touch $@

# The upstream ROS 2 command-line tools (ros2 launch, topic, param, lifecycle ...) from
# $(ROS2_TOOLS), for the tests that drive the graph as an operator does; where that folder is
# absent they are not installed and those tests skip.
$(STAMPS)/ros2-tools: $(STAMPS)/venv $(wildcard $(ROS2_TOOLS)/install.sh)
	@if [ -x $(ROS2_TOOLS)/install.sh ]; then \
	  $(ROS2_TOOLS)/install.sh $(VENV) && touch $@; \
	else \
	  echo "$(ROS2_TOOLS) is absent: ros2 launch and ros2cli not installed (their tests skip)"; \
	fi

test: setup
	env PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest test -q

demo: setup
	env PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m rackpower_nodes.tools.demo

bench: setup
	env PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benchmarks/bench_acquisition.py

# Builds the package the way a ROS 2 install does (colcon), against the venv's ROS prefix.
colcon: setup
	env AMENT_PREFIX_PATH=$(abspath $(VENV)) CMAKE_PREFIX_PATH=$(abspath $(VENV)) \
	  PATH=$(abspath $(VENV))/bin:$$PATH \
	  colcon --log-base build/colcon/log build --base-paths . \
	  --build-base build/colcon/build --install-base build/colcon/install \
	  --cmake-args -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=OFF

clean:
	rm -rf build

distclean: clean
	rm -rf $(VENV)
