"""What a node process imports: modules that only a rare path needs are imported where that
path starts, not with the node, since every node is a process of its own and the rack's graph
must stay within its memory budget (the eight processes <= 700 MB RSS with an LSTM served).

Each check runs in a fresh interpreter, as a node process starts (the test process itself has
imported everything already).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

#: the rack graph's node executables (each imports `entry`, then its node module)
NODES = ("current_sensor", "health_monitor", "host_telemetry", "pdu_actuator", "predictor",
         "rack_view", "recorder", "retrain_scheduler")

#: top-level packages of ROS's IDL-to-Python generator, which rosidl_generator_py's __init__
#: imports beside import_type_support unless the entry point leaves it out
IDL_GENERATOR = {"lark", "em", "rosidl_pycommon"}


def _modules_after(code: str) -> dict:
    """Run `code` in a fresh interpreter; it leaves its findings in the dict `found`, to
    which the top-level package of every module then in sys.modules is added as `top`."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        found["top"] = sorted({m.split(".")[0] for m, mod in sys.modules.items()
                               if mod is not None})
        print(json.dumps(found))
    """)
    out = subprocess.run([sys.executable, "-c", "found = {}\n" + script],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_health_monitor_without_a_model_does_not_load_lightgbm():
    """lightgbm (and scipy under it, ~28 MB) is needed only to fit a baseline (the learner's
    child process) or to apply one; the node without a model runs the physical checks."""
    found = _modules_after("""
        import numpy as np
        import rackpower_nodes.nodes.health_monitor
        from rackpower_nodes.core.health import FRAME_FIELDS, HealthFrame
        from rackpower_nodes.core.health.config import HealthConfig
        from rackpower_nodes.core.health.monitor import HealthModel, HealthMonitor

        names, kinds = ("srv01", "sw01"), ("server", "switch")
        mon = HealthMonitor(names, kinds, None, HealthConfig())
        t = 1_700_000_000.0 + np.arange(120.0)
        cols = {f: np.full((len(t), 2), 100.0) for f in FRAME_FIELDS}
        verdicts = mon.update(HealthFrame(t, names, kinds, **cols))
        found["verdicts"] = len(verdicts)
        found["learned"] = bool(mon.learned)
    """)
    assert found["learned"] is False
    assert not {"lightgbm", "scipy", "sklearn"} & set(found["top"]), found["top"]


def test_a_health_model_loads_lightgbm_where_it_fits_or_rebuilds_a_booster():
    """The deferred import happens where a booster is needed: a fit, and a model's booster
    rebuilt from its saved model string (predicting as the fitted one)."""
    found = _modules_after("""
        import sys
        import numpy as np
        from rackpower_nodes.core.health import baseline
        from rackpower_nodes.core.health.config import HealthConfig

        found["before"] = "lightgbm" in sys.modules
        x = np.random.default_rng(0).uniform(0, 1, (200, 2))
        fitted = baseline._booster(x, 3 * x[:, 0], HealthConfig(trees=5, min_leaf=5))
        model = object.__new__(baseline.HealthModel)
        model.power_models, model.util_models = [fitted.model_to_string()], [""]
        model.ripple_models = [""]
        model._boosters = {}
        rebuilt = model.booster("power", 0)
        found["booster"] = type(rebuilt).__name__
        found["same"] = bool(np.allclose(rebuilt.predict(x), fitted.predict(x)))
        found["util"] = model.booster("util", 0) is None
    """)
    assert found["before"] is False
    assert found["booster"] == "Booster" and found["same"] and found["util"]
    assert "lightgbm" in found["top"]


@pytest.mark.parametrize("node", NODES)
def test_a_node_started_by_its_entry_point_leaves_the_idl_generator_out(node):
    """The entry point keeps rosidl's code generator (lark, empy, rosidl_pycommon: ~6.7 MB per
    process) out; the messages' type support still loads (a message serialised and read
    back), and the node module leaves lightgbm and torch out as before."""
    found = _modules_after(f"""
        import rackpower_nodes.nodes.entry
        import rackpower_nodes.nodes.{node}
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.serialization import deserialize_message, serialize_message

        from rackpower.msg import PowerSamples

        msg = PowerSamples(channel_ids=["srv01"])
        found["samples"] = list(deserialize_message(serialize_message(msg),
                                                    PowerSamples).channel_ids)
        diag = DiagnosticArray(status=[DiagnosticStatus(name="x")])
        back = deserialize_message(serialize_message(diag), DiagnosticArray)
        found["diag"] = back.status[0].name
    """)
    assert found["samples"] == ["srv01"] and found["diag"] == "x"
    assert not IDL_GENERATOR & set(found["top"]), found["top"]
    heavy = {"torch", "matplotlib"} | ({"lightgbm"} if node != "predictor" else set())
    assert not heavy & set(found["top"]), found["top"]


def test_the_entry_point_keeps_a_generator_already_imported():
    """Only a process that has not loaded the generator is kept from it: a tool that imported
    it before the entry module still has it."""
    found = _modules_after("""
        import sys
        import rosidl_generator_py.generate_py_impl
        import rackpower_nodes.nodes.entry
        import rosidl_generator_py

        found["kept"] = sys.modules["rosidl_generator_py.generate_py_impl"] is not None
        found["generate_py"] = hasattr(rosidl_generator_py, "generate_py")
    """)
    assert found["kept"] is True and found["generate_py"] is True
