"""Python side of rackpower for tools that expect a setup.py.

The ROS package is built by CMake (`colcon build` or `make setup`), which also generates the
messages; CMake installs `rackpower_nodes` with the metadata and console scripts in setup.cfg.
This file lets setuptools-based tools (e.g. `pip install -e .` for editing the pure core) read
the same setup.cfg.
"""
from setuptools import setup

setup()
