"""The layering, read from the source: which module of service/ imports which (ast, no import).

interceptor -> servicer -> use case (service.domain) -> port <- repository -> database: the
domain declares the ports it needs (service.domain.ports) and never imports the layers that
implement them, nor the transport or the database libraries; server.py wires the two together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each layer must never import (a name or any module under it).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "service.domain": (
        "service.repositories",
        "service.db",
        "service.servicers",
        "service.interceptors",
        "service.server",
        "grpc",
        "grpc_status",
        "grpc_health",
        "sqlalchemy",
        "asyncpg",
    ),
    "service.repositories": ("grpc", "grpc_status", "service.servicers", "service.interceptors"),
    "service.servicers": ("sqlalchemy", "asyncpg", "service.repositories", "service.db"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports, relative imports resolved, TYPE_CHECKING ones included
    (a type-only import is still an arrow a reader follows)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from service.domain import ports` imports the module service.domain.ports
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def service_imports() -> dict[str, set[str]]:
    """For each module of service/, the modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "service").rglob("*.py")):
        name = module_name(path)
        graph[name] = imports_of(path.read_text(), name, path.name == "__init__.py")
    return graph


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def internal_graph(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Only the arrows between modules of service/ that exist (the form of the closing note)."""
    return {
        module: sorted(i for i in imported if i in graph and i != module)
        for module, imported in graph.items()
    }


def violations(graph: dict[str, set[str]]) -> list[str]:
    """ "module imports name" for each forbidden import (`from a.b import c` as a.b alone)."""
    found = []
    for module, imports in graph.items():
        banned = [b for layer, names in FORBIDDEN.items() if within(module, layer) for b in names]
        bad = {i for i in imports if any(within(i, b) for b in banned)}
        found += [f"{module} imports {i}" for i in bad if not any(within(i, o) for o in bad - {i})]
    return sorted(found)


def test_no_layer_imports_what_it_must_not() -> None:
    assert violations(service_imports()) == []


def test_the_graph_is_read_from_the_real_modules() -> None:
    """The walk sees the arrows that must be there, so an empty violation list means something."""
    graph = internal_graph(service_imports())
    assert "service.domain.ports" in graph["service.domain.users"]
    assert "service.domain.ports" in graph["service.domain.posts"]
    # The composition root is where the concrete repositories meet the use cases.
    assert {"service.repositories.users", "service.domain.users"} <= set(graph["service.server"])
    assert any(within(i, "sqlalchemy") for i in service_imports()["service.repositories.users"])


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("service.domain.x", "import grpc.aio", "service.domain.x imports grpc.aio"),
        (
            "service.domain.x",
            "from ..repositories.users import UserRepository",
            "service.domain.x imports service.repositories.users",
        ),
        (
            "service.domain.x",
            "from service import db",
            "service.domain.x imports service.db",
        ),
        (
            "service.domain.x",
            "if TYPE_CHECKING:\n    from sqlalchemy import select",
            "service.domain.x imports sqlalchemy",
        ),
        ("service.repositories.x", "from grpc import aio", "service.repositories.x imports grpc"),
        (
            "service.servicers.x",
            "import sqlalchemy as sa",
            "service.servicers.x imports sqlalchemy",
        ),
    ],
)
def test_a_forbidden_import_is_reported(module: str, source: str, expected: str) -> None:
    assert expected in violations({module: imports_of(source, module)})


def test_allowed_imports_are_not_reported() -> None:
    module = "service.domain.x"
    source = (
        "from google.rpc import code_pb2\nfrom blog.v1.error_reason_pb2 import ErrorReason\n"
        "from service.domain.ports import UserRows\nimport grpcio_free_name\n"
    )
    assert violations({module: imports_of(source, module)}) == []
