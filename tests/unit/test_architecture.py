"""The shape of the code (docs/architecture.md): no import circles, no grpc below the
protocol edges, and function facts only in the catalog and the graphs."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actgrad_server import catalog

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "actgrad": ROOT / "client" / "actgrad",
    "actgrad_server": ROOT / "server" / "actgrad_server",
}
GENERATED = ("_pb2.py", "_pb2_grpc.py")


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            if path.name.endswith(GENERATED):
                continue
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import, wherever it is: in a function, under `if TYPE_CHECKING:` (a circle
    the type checker needs is still a circle), and `importlib.import_module("name")`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield ast.Import(names=[ast.alias(name=node.args[0].value)])


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = module.split(".")
            parent = parent if is_package else parent[:-1]
            parent = parent[: len(parent) - (node.level - 1)]
            base = ".".join([*parent, *([base] if base else [])])
        names = [f"{base}.{alias.name}" for alias in node.names]
        # `from package import module` is an arrow to the module (loading the package
        # first is implied, as for `import package.module`); any other name is the
        # package's own, an arrow to the package.
        if any(name not in MODULES for name in names):
            names.append(base)
    found = set()
    for name in names:
        # The module itself, or the nearest package above it that is ours.
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(module, node, path.name == "__init__.py")
        graph[module] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_sees_known_edges() -> None:
    graph = _graph()
    assert "actgrad_server.catalog" in graph["actgrad_server.engine"]
    assert "actgrad.wire.dtypes" in graph["actgrad_server.graphs._common"]
    assert "actgrad_server.app" in graph["actgrad_server.workers"]
    # Seen only under `if TYPE_CHECKING:` (the package loads its client lazily).
    assert "actgrad._client" in graph["actgrad"]
    # Seen only as importlib.import_module("actgrad_server.cli").
    assert "actgrad_server.cli" in graph["actgrad.cli"]
    # `from actgrad import _malloc` is an arrow to the module, not to the package.
    assert "actgrad" not in graph["actgrad._client"]


def test_type_checking_imports_are_arrows() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from actgrad_server.catalog import Function\n"
    )
    module = "actgrad_server.graphs.dense"
    targets = set().union(*(_targets(module, node, False) for node in _imports(tree)))
    assert targets == {"actgrad_server.catalog"}


def test_no_import_circles() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


# The protocol front ends share code through neutral modules (`statuses`, `models`, ...),
# never through each other, so that one can change or go without the other.
FRONT_ENDS = ("actgrad_server.api", "actgrad_server.oip")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_front_ends_do_not_import_each_other() -> None:
    crossings = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for front in FRONT_ENDS
        if _within(module, front)
        for target in targets
        for other in FRONT_ENDS
        if other != front and _within(target, other)
    )
    assert not crossings, crossings


def test_actgrads_core_imports_no_front_end() -> None:
    # ops.py is what every front end of actgrad.v1 calls (gRPC's api, HTTP's routes).
    fronts = (*FRONT_ENDS, "actgrad_server.http")
    found = sorted(t for t in _graph()["actgrad_server.ops"] if any(_within(t, f) for f in fronts))
    assert not found, found


def test_a_circle_would_be_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize(
    "modules",
    [
        ("actgrad.wire",),
        ("actgrad_server.engine", "actgrad_server.catalog", "actgrad_server.graphs"),
        ("actgrad_server.oip.dataplane", "actgrad_server.models"),
        ("actgrad_server.ops",),
    ],
    ids=["wire", "engine-catalog", "oip-core", "actgrad-core"],
)
def test_the_core_does_not_load_grpc(modules: tuple[str, ...]) -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "loaded = sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')"
        " or m in ('actgrad._client', 'actgrad._channel', 'actgrad._requests',"
        " 'actgrad._responses', 'actgrad.errors'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""


def test_the_sdk_still_loads_on_first_use() -> None:
    code = "import actgrad\nprint(actgrad.Client.__module__, actgrad.NotFoundError.__module__)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["actgrad._client", "actgrad.errors"]


# Modules that own function facts; everything else reads them from the catalog.
OWNERS = ("actgrad_server.catalog", "actgrad_server.graphs")
# The one exception: `actgrad softmax` is the command of the Softmax RPC, a verb of the
# contract (like `Client.softmax`), not a function looked up by name.
VERBS = {
    ("client/actgrad/cli.py", "softmax"),
    # The default activation of Client.dense, which the SDK's API names (issue 10).
    ("client/actgrad/_client.py", "relu"),
}


def _string_constants(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_module_outside_the_catalog_names_a_function() -> None:
    names = {n for f in catalog.CATALOG for n in (f.name, *f.aliases)}
    found = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for module, path in MODULES.items()
        if not module.startswith(OWNERS)
        for line, value in _string_constants(path)
        if value in names and (path.relative_to(ROOT).as_posix(), value) not in VERBS
    ]
    assert not found, "\n".join(found)
