"""The layering of docs/architecture.md, read from the source's imports.

Every `import` and `from ... import` of the package is taken from the syntax tree, those inside
functions included (a lazy import is still a dependency), and checked against the rules:

- core imports core only (numpy, torch and the like are fine: they are not ours);
- core imports no ROS (rclpy, generated messages): it runs and is tested without a graph;
- drivers and sources import core; sim imports core, sources and drivers' interfaces;
- nodes import core, drivers, sources and their shared modules (`nodes.common`, `nodes.main`),
  never another node, the simulator or a tool;
- tools, at the top, import anything;
- no module imports itself through others (every import cycle is listed);
- no module is longer than MAX_LINES, except those in LONG_MODULES, each with its reason.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "rackpower_nodes"
MAX_LINES = 400
LONG_MODULES: dict[str, str] = {}          # module -> why it may be longer than MAX_LINES

NODES = ("current_sensor", "host_telemetry", "predictor", "pdu_actuator", "recorder",
         "retrain_scheduler", "health_monitor")
NODE_SHARED = ("common", "main", "entry", "composed", "workload_msgs", "room_msgs",
               "allocation_msgs")
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "drivers": {"core"},
    "sources": {"core"},
    "sim": {"core", "sources", "drivers"},
    "nodes": {"core", "drivers", "sources"},
    "tools": {"core", "drivers", "sources", "sim", "nodes"},
}


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root/package."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path], package: str) -> set[str]:
    """The package's modules `name` imports, anywhere in its body. `from pkg import mod`
    imports `pkg.mod`; `from pkg.mod import func` imports `pkg.mod` (a re-exporting package's
    `__init__` when `func` comes from there)."""
    is_package = path.name == "__init__.py"
    targets = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets += [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known
                        else origin for alias in node.names]
    found = set()
    for target in targets:
        if target != package and not target.startswith(package + "."):
            continue
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known and target != name:
            found.add(target)
    return found


def layer_of(module: str, package: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def violations(graph: dict[str, set[str]], package: str) -> list[str]:
    """Every import from a layer to one it may not use, and every node importing a node."""
    found = []
    for module, deps in sorted(graph.items()):
        layer = layer_of(module, package)
        if layer is None:
            continue
        for dep in sorted(deps):
            dep_layer = layer_of(dep, package)
            if dep_layer is None or dep_layer == layer:
                if (layer == "nodes" and dep_layer == "nodes" and _node(module, package)
                        and _node(dep, package) and module != dep):
                    found.append(f"{module} imports the node {dep}")
                continue
            if dep_layer not in ALLOWED[layer]:
                found.append(f"{module} ({layer}) imports {dep} ({dep_layer})")
    return found


def _node(module: str, package: str) -> bool:
    parts = module.split(".")
    return len(parts) > 2 and parts[1] == "nodes" and parts[2] not in NODE_SHARED


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm),
    each sorted; a package importing its own submodule that imports the package back counts."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: imports_of(name, path, known, package) for name, path in known.items()}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(REPO, PACKAGE)


def test_every_import_goes_down_the_layers(graph):
    assert violations(graph, PACKAGE) == []


def ros_imports(path: Path) -> list[str]:
    """The ROS client library and message packages a file imports."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append(node.module)
    return sorted({n for n in names if n.split(".")[0] in ("rclpy", "rosidl_runtime_py",
                                                             "rackpower")
                   or n.split(".")[0].endswith("_msgs")})


def test_core_imports_no_ros():
    found = {name: ros_imports(path) for name, path in modules(REPO, PACKAGE).items()
             if layer_of(name, PACKAGE) == "core"}
    assert {name: names for name, names in found.items() if names} == {}


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_every_module_belongs_to_a_layer(graph):
    """A new module goes into one of the layers (docs/architecture.md says which)."""
    loose = sorted(m for m in graph if m != PACKAGE and layer_of(m, PACKAGE) is None)
    assert loose == []


def test_no_module_is_longer_than_the_limit():
    long = {name: len(path.read_text(encoding="utf-8").splitlines())
            for name, path in modules(REPO, PACKAGE).items()}
    over = {name: n for name, n in long.items() if n > MAX_LINES and name not in LONG_MODULES}
    assert over == {}


def test_the_checks_find_upward_imports_node_to_node_imports_and_cycles(tmp_path):
    """The checker itself, on a small package made for it: each kind of fault is reported."""
    pkg = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/a.py": "def f():\n    from pkg.sim import world\n",          # lazy, upward
        "core/b.py": "from pkg.core import c\n",
        "core/c.py": "from . import b\nimport rclpy\n",                     # cycle b <-> c
        "sim/__init__.py": "",
        "sim/world.py": "from pkg.core.a import f\n",
        "nodes/__init__.py": "",
        "nodes/common.py": "import pkg.core.a\n",
        "nodes/predictor.py": "from pkg.nodes.common import x\n",
        "nodes/recorder.py": "from pkg.nodes import predictor\nfrom pkg.sim.world import y\n",
        "stray.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    fake = import_graph(tmp_path, "pkg")
    assert violations(fake, "pkg") == [
        "pkg.core.a (core) imports pkg.sim.world (sim)",
        "pkg.nodes.recorder imports the node pkg.nodes.predictor",
        "pkg.nodes.recorder (nodes) imports pkg.sim.world (sim)",
    ]
    assert cycles(fake) == [["pkg.core.a", "pkg.sim.world"], ["pkg.core.b", "pkg.core.c"]]
    assert sorted(m for m in fake if m != "pkg" and layer_of(m, "pkg") is None) == ["pkg.stray"]
    assert ros_imports(pkg / "core" / "c.py") == ["rclpy"]
