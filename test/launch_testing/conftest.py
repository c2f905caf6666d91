"""Collect this folder's files as launch_testing tests, under the pytest the project uses.

launch_testing's own pytest plugin is disabled in pyproject.toml (`-p no:launch_testing`): its
collection hook still takes pytest's removed `path` argument and does not load under pytest 9.
Here the same job is done with the current hook signature: each file becomes launch_testing's
own LaunchTestModule, run by its loader and LaunchTestRunner and reported as it reports. Where
launch_testing is not installed (no ../shared/ros2-tools), the file is left to pytest's own
collector and skips itself at import with a message saying so.
"""
from __future__ import annotations

import copy
import os

import pytest


def pytest_pycollect_makemodule(module_path, parent):
    if not module_path.name.startswith("test_"):
        return None
    try:
        from launch_testing.pytest.hooks import (
            LaunchTestFailure, LaunchTestItem, LaunchTestModule)
    except ImportError:
        return None              # pytest's own Module: the file skips itself at import

    class Item(LaunchTestItem):
        def runtest(self):
            # as LaunchTestItem.runtest, without its --launch-args option (declared by the
            # disabled plugin) and with launch's DEBUG log only under -v (it takes `-q`'s
            # verbosity of -1 for true)
            # launch's own log (launch.log) beside the run's other logs, not in ~/.ros/log
            os.environ.setdefault("ROS_LOG_DIR", str(
                self.config._tmp_path_factory.mktemp("launch_log")))
            runner = self.runner_cls(test_runs=copy.deepcopy(self.test_runs),
                                     launch_file_arguments=[],
                                     debug=self.config.getoption("verbose") > 0)
            runner.validate()
            results = runner.run()
            if any(not result.wasSuccessful() for result in results.values()):
                raise LaunchTestFailure(message="some test cases have failed", results=results)

    class Module(LaunchTestModule):
        def makeitem(self, *args, **kwargs):
            return Item.from_parent(*args, **kwargs)

    module = Module.from_parent(parent=parent, path=module_path)
    module.add_marker(pytest.mark.ros)          # DDS participants: see pyproject's markers
    return module
