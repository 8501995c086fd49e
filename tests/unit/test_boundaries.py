"""The layering of the packages, checked on the source: only bus/ touches zmq and msgpack, and ui/, agents/
and supervisor/ never import each other."""

from __future__ import annotations

import ast
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


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources() -> list[tuple[str, Path]]:
    return [(pkg, path) for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))]


def test_packages_have_sources() -> None:
    assert {pkg for pkg, _ in sources()} == set(PACKAGES)


@pytest.mark.parametrize(("package", "path"), sources(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_layering(package: str, path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        if package != "bus":
            assert top not in ("zmq", "msgpack"), f"{path.relative_to(ROOT)} imports {name}: only bus/ may"
        if name.startswith("heidi_engine."):
            sibling = name.split(".")[1]
            assert sibling not in FORBIDDEN_SIBLINGS[package], f"{path.relative_to(ROOT)} imports {name}"


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import zmq\nfrom heidi_engine.supervisor.broker import Supervisor\n")
    assert imports_of(bad) == {"zmq", "heidi_engine.supervisor.broker"}
