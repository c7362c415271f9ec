"""The tests have one support surface: helpers in tests/support/, fixtures in conftest.py.

A helper imported from conftest or from another test module is how copies start (the next test
copies it rather than reach into a file about something else), so those imports fail here, and
conftest.py holds nothing but fixtures.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported(path: Path) -> set[str]:
    """Every module `path` imports, `from tests import x` counted as tests.x."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def is_test_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last == "conftest" or (last.startswith("test_") and name.startswith(("tests.", "test_")))


def test_no_module_imports_conftest_or_a_test_module() -> None:
    offenders = {
        str(path.relative_to(TESTS)): sorted(filter(is_test_module, imported(path)))
        for path in sorted(TESTS.rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_conftest_holds_only_fixtures() -> None:
    tree = ast.parse((TESTS / "conftest.py").read_text())
    functions = [
        node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    not_fixtures = [
        f.name for f in functions if not any("fixture" in ast.unparse(d) for d in f.decorator_list)
    ]
    others = [
        type(node).__name__
        for node in tree.body
        if not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Import | ast.ImportFrom | ast.Expr
        )
    ]
    assert functions and not_fixtures == [] and others == []


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """They see each form of the import they forbid (and not a helper named like a test)."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import conftest\nfrom tests.conftest import plain\nfrom tests import test_posts\n"
        "from tests.test_users import create\nfrom tests.support import testing_helper\n"
    )
    assert sorted(filter(is_test_module, imported(sample))) == [
        "conftest",
        "tests.conftest",
        "tests.test_posts",
        "tests.test_users",
    ]
