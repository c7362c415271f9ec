"""Error reasons are declared once, as `enum ErrorReason` in the protos, and served by reflection.

The reasons the code can raise are read from the code itself (its syntax tree), not from a list
kept by hand: every `ErrorReason.X` the service names, and every reason given as a string
anywhere (which would bypass the enum), is checked against the enum's descriptor.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from blog.v1.error_reason_pb2 import ErrorReason
from google.protobuf import descriptor_pb2
from google.rpc import code_pb2

from service.domain import errors
from service.server import Server
from tests.support import ROOT
from tests.support.grpcurl import grpcurl

DECLARED = set(ErrorReason.DESCRIPTOR.values_by_name)
SOURCES = sorted((ROOT / "service").rglob("*.py"))


def _reason_usages(path: Path) -> tuple[set[str], list[str]]:
    """The ErrorReason values `path` names, and the places it gives a reason as a string."""
    named: set[str] = set()
    strings: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "ErrorReason"
            and node.attr.isupper()
        ):
            named.add(node.attr)
        values: list[ast.expr] = []
        if isinstance(node, ast.keyword) and node.arg == "reason":
            values.append(node.value)
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "reason" for t in targets) and node.value:
                values.append(node.value)
        strings += [
            f"{path.relative_to(ROOT)}:{v.lineno} reason={v.value!r}"
            for v in values
            if isinstance(v, ast.Constant) and isinstance(v.value, str)
        ]
    return named, strings


def test_the_scan_finds_the_reasons_the_code_raises() -> None:
    """The scan itself works: it sees reasons raised in the domain, the data layer and auth."""
    named = set().union(*(_reason_usages(p)[0] for p in SOURCES))
    assert {"USER_NOT_FOUND", "EMAIL_TAKEN", "INVALID_TOKEN", "INVALID_PAGE_TOKEN"} <= named


def test_every_reason_the_code_names_is_declared_in_the_enum() -> None:
    named = set().union(*(_reason_usages(p)[0] for p in SOURCES))
    assert named - DECLARED == set()


def test_no_reason_is_given_as_a_string() -> None:
    strings = [s for p in SOURCES for s in _reason_usages(p)[1]]
    assert strings == [], "reasons must be ErrorReason values, declared in error_reason.proto"


def _error_classes() -> list[type[errors.DomainError]]:
    found: list[type[errors.DomainError]] = []
    pending: list[type[errors.DomainError]] = [errors.DomainError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


def test_every_error_class_has_a_declared_default_reason_and_a_status_code() -> None:
    for kind in _error_classes():
        assert ErrorReason.Name(kind.reason) in DECLARED, kind
        assert kind.reason != ErrorReason.ERROR_REASON_UNSPECIFIED, kind
        assert kind.code != 0, f"{kind.__name__} has status OK"


def _value_comments() -> dict[str, str]:
    """The leading comment of each ErrorReason value, from the descriptor set reflection serves."""
    data = (ROOT / "generated/blog/v1/descriptors.binpb").read_bytes()
    (file,) = [
        f
        for f in descriptor_pb2.FileDescriptorSet.FromString(data).file
        if f.name == "blog/v1/error_reason.proto"
    ]
    (enum,) = file.enum_type
    comments: dict[str, str] = {}
    for location in file.source_code_info.location:
        # [enum_type = 5, 0, value = 2, index]: a value of the file's only enum.
        if list(location.path[:3]) == [5, 0, 2] and len(location.path) == 4:
            comments[enum.value[location.path[3]].name] = location.leading_comments.strip()
    return comments


def test_every_value_is_commented_with_its_status_code() -> None:
    """The comment of each value starts with the code the client reads with it."""
    codes = set(code_pb2.Code.DESCRIPTOR.values_by_name) - {"OK"}
    comments = _value_comments()
    assert set(comments) == DECLARED
    for name, comment in comments.items():
        if name != "ERROR_REASON_UNSPECIFIED":
            assert comment.split(".")[0].split(" (")[0] in codes, (name, comment)
            assert len(comment) > 40, f"{name}: say what the client should do"


def test_the_reasons_the_issues_name_are_declared() -> None:
    """Reasons other parts of the service (limits, request ids, decoding) send."""
    assert {
        "STREAMS_EXHAUSTED",
        "PASSWORD_HASHING_EXHAUSTED",
        "SERVER_OVERLOADED",
        "REQUEST_ID_REUSED",
        "MALFORMED_REQUEST",
        "DATABASE_UNAVAILABLE",
        "STALE_ETAG",
    } <= DECLARED


@pytest.mark.usefixtures("db_pool")
async def test_reflection_serves_the_enum_with_its_comments(server: Server) -> None:
    described = await grpcurl(server, "describe", "blog.v1.ErrorReason")
    assert described.returncode == 0, described.stderr
    assert "enum ErrorReason" in described.stdout
    assert "USER_NOT_FOUND = 10" in described.stdout
    assert "NOT_FOUND. No user has this id" in described.stdout  # comments come along


def test_the_domain_imports_no_grpc() -> None:
    """The enum and the status codes the domain uses are protobuf messages, not grpc."""
    for module in ("errors", "users", "posts", "paging", "validation"):
        source = inspect.getsource(__import__(f"service.domain.{module}", fromlist=["_"]))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"grpc", "sqlalchemy"}, (module, imported)
