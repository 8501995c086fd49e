"""The layering of the packages, checked on the source: only bus/ touches zmq and msgpack; ui/, agents/ and
supervisor/ never import each other; every import is absolute; no module imports itself back through
others (no circle, deferred imports included: an import inside a function still runs); and no module or
class outgrows a room (450 and 250 lines)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bus", "supervisor", "agents", "ui")
FORBIDDEN_SIBLINGS = {
    "bus": {"supervisor", "agents", "ui"},
    "supervisor": {"agents", "ui"},
    "agents": {"supervisor", "ui"},
    "ui": {"supervisor", "agents"},
}


def module_name(root: Path, path: Path) -> str:
    """``agents/teacher/pool.py`` → ``heidi_engine.agents.teacher.pool`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["heidi_engine", *parts])


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (a relative one resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, module: str = "heidi_engine.x") -> tuple[set[str], list[int]]:
    """Every module ``path`` imports (``from m import n`` as ``m.n`` too, which may be a submodule), and
    the lines of its relative imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    relative: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative.append(node.lineno)
            target = resolve(module, path.name == "__init__.py", node)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names, relative


def sources(root: Path = ROOT) -> list[tuple[str, Path]]:
    return [(pkg, path) for pkg in PACKAGES for path in sorted((root / pkg).rglob("*.py"))]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the project modules it imports: ``from m import n`` is an edge to ``m.n`` when that is a
    module, else to ``m`` (a name from a package's ``__init__``)."""
    paths = {module_name(root, path): path for _, path in sources(root)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = resolve(name, path.name == "__init__.py", node)
                for alias in node.names:
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in paths else target)
        graph[name] = {edge for edge in edges if edge in paths and edge != name}
    return graph


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_packages_have_sources() -> None:
    assert {pkg for pkg, _ in sources()} == set(PACKAGES)


@pytest.mark.parametrize(("package", "path"), sources(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_layering(package: str, path: Path) -> None:
    names, relative = imports_of(path, module_name(ROOT, path))
    where = path.relative_to(ROOT)
    assert not relative, f"{where} has relative imports on lines {relative}: write heidi_engine.* imports"
    for name in names:
        top = name.split(".")[0]
        if package != "bus":
            assert top not in ("zmq", "msgpack"), f"{where} imports {name}: only bus/ may"
        if name.startswith("heidi_engine."):
            sibling = name.split(".")[1]
            assert sibling not in FORBIDDEN_SIBLINGS[package], f"{where} imports {name}"


MODULE_MAX_LINES = 450
CLASS_MAX_LINES = 250


@pytest.mark.parametrize(("package", "path"), sources(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_rooms_stay_small(package: str, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT)
    assert text.count("\n") <= MODULE_MAX_LINES, f"{where}: over {MODULE_MAX_LINES} lines; split it along its seams"
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
            size = node.end_lineno - node.lineno + 1
            assert size <= CLASS_MAX_LINES, f"{where}: class {node.name} is {size} lines (at most {CLASS_MAX_LINES})"


def test_no_module_imports_itself_back() -> None:
    found = circles(import_graph(ROOT))
    assert not found, "import circles:\n" + "\n".join(" ↔ ".join(group) for group in found)


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for pkg in PACKAGES:
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_checker_catches_a_forbidden_import_absolute_or_relative(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import zmq\nfrom heidi_engine.supervisor.broker import Supervisor\n")
    assert imports_of(bad)[0] >= {"zmq", "heidi_engine.supervisor.broker"}
    root = _tree(tmp_path / "tree", {"agents/stage.py": "from ..ui import panels\nfrom .runtime import emit\n"})
    names, relative = imports_of(root / "agents/stage.py", module_name(root, root / "agents/stage.py"))
    assert relative == [1, 2]
    assert {"heidi_engine.ui.panels", "heidi_engine.agents.runtime"} <= names


def test_checker_finds_a_circle_through_a_deferred_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "ui/dashboard/__init__.py": "",
        "ui/dashboard/screen.py": "from heidi_engine.ui.dashboard.views import overview\n",
        "ui/dashboard/views/__init__.py": "",
        "ui/dashboard/views/overview.py": "def render():\n    from heidi_engine.ui.dashboard.screen import Frame\n",
        "ui/text.py": "from heidi_engine.bus import codec\n",
        "bus/codec.py": "",
    })  # fmt: skip
    assert circles(import_graph(root)) == [["heidi_engine.ui.dashboard.screen", "heidi_engine.ui.dashboard.views.overview"]]
