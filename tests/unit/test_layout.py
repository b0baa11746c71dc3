"""The layout's rules, read from the source's imports (every import, including those
inside functions and under ``TYPE_CHECKING``):

- a service's private package ``services/_<x>/`` is imported only by its entrypoint
  module ``services/<x>.py``, by itself, by ``migrations/<x>/`` and by tests;
- the pika client imports nothing of the services, nameko or eventlet;
- no module imports, directly or through others, a module that imports it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "gateway", "clients", "tools", "benchmarks", "migrations", "examples")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


MODULES = source_files()


def imported(path: Path) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES}


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def private_owner(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "services" and len(parts) > 1 and parts[1].startswith("_"):
        return parts[1][1:]
    return None


def may_import_private(importer: str, service: str) -> bool:
    return (
        importer == f"services.{service}"
        or private_owner(importer) == service
        or importer.startswith(f"migrations.{service}.")
        or importer == f"migrations.{service}"
    )


def test_the_rules_see_every_service():
    owners = {private_owner(m) for m in MODULES} - {None}
    assert owners == {"students", "status", "certificates", "notifications"}
    assert "services._status.repo" in GRAPH["services.status"]


def test_private_packages_are_imported_only_by_their_service():
    offenders = sorted(
        f"{importer} imports {target}"
        for importer, targets in GRAPH.items()
        for target in targets
        if (owner := private_owner(target)) and not may_import_private(importer, owner)
    )
    assert offenders == []


def test_the_pika_client_stands_alone():
    for name, path in MODULES.items():
        if name.startswith("clients"):
            tree = ast.parse(path.read_text())
            roots = {
                (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names
            }
            assert not roots & {"services", "gateway", "tools", "nameko", "eventlet"}, name


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target == node:
                continue
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def module_graph() -> dict[str, set[str]]:
    """Module-to-module edges: a package's ``__init__`` is not its modules' caller."""
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    return {name: targets - packages for name, targets in GRAPH.items() if name not in packages}


def test_no_import_cycles():
    assert find_cycle(module_graph()) is None


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set(), "c": {"a"}}, None),
    ],
)
def test_find_cycle_finds_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_the_image_holds_every_module_compose_runs():
    """Each module a compose service runs exists, and the Dockerfile copies its package."""
    copied = set(re.findall(r"^COPY (\w+)/ ", (ROOT / "Dockerfile").read_text(), re.M))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    run = {
        word
        for service in compose["services"].values()
        if isinstance(service.get("command"), list)
        for word in service["command"]
        if word.split(".")[0] in PACKAGES
    }
    assert {"tools.launch", "tools.migrate", "services.status", "gateway.service"} <= run
    assert sorted(m for m in run if m not in MODULES) == []
    assert sorted(m for m in run if m.split(".")[0] not in copied) == []
