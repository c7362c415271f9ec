"""service/reflection.py overrides private methods of grpcio-reflection's servicer. These tests fail
when the installed library no longer matches what the override was written against: the versions
pinned in pyproject.toml, the private methods it overrides and their parameters, and, through
grpcurl, reflection answering both protocols (v1 and v1alpha) with the override in effect."""

from __future__ import annotations

import base64
import inspect
import json
import tomllib
from importlib import metadata

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from packaging.requirements import Requirement

from service import reflection as ours
from service.server import Server
from tests.support import ROOT
from tests.support.grpcurl import grpcurl

# The library's methods that _ReflectionServicer replaces; its other private methods are helpers.
OVERRIDDEN = {"_file_by_filename", "_file_containing_symbol"}
GRPC_COMPANIONS = {"grpcio", "grpcio-reflection", "grpcio-health-checking", "grpcio-status"}


def test_grpcio_and_its_companions_are_pinned_and_installed_at_the_pin() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {(r := Requirement(line)).name: r.specifier for line in declared}
    for name in GRPC_COMPANIONS:
        (spec,) = pins[name]
        assert spec.operator == "==", (
            f"{name} {spec}: pin it, reflection.py relies on its internals"
        )
        assert metadata.version(name) == spec.version, f"{name}: run make install"


def test_the_overridden_private_methods_exist_with_the_parameters_the_override_has() -> None:
    library = reflection.aio.ReflectionServicer  # type: ignore[attr-defined]
    private = {n for n in vars(ours._ReflectionServicer) if n.startswith("_") and n[1] != "_"}
    # A helper of ours that the library now defines too would replace its method silently.
    assert {n for n in private if hasattr(library, n)} == OVERRIDDEN
    for name in OVERRIDDEN:
        theirs = inspect.signature(getattr(library, name)).parameters.values()
        mine = inspect.signature(getattr(ours._ReflectionServicer, name)).parameters.values()
        assert [p.kind for p in mine] == [p.kind for p in theirs], name
        # The library's ServerReflectionInfo is what calls them: they must still be its dispatch.
        assert f"self.{name}(" in inspect.getsource(library.ServerReflectionInfo), name


def test_the_library_constructor_still_sets_the_pool_the_override_reads() -> None:
    """The override looks symbols up in self._pool, where _register_v1 adds the v1 descriptor."""
    servicer = ours._ReflectionServicer(["blog.v1.UserService"])
    assert servicer._pool is descriptor_pool.Default()


async def _reflect(server: Server, service: str, request: dict[str, str]) -> dict[str, object]:
    result = await grpcurl(
        server, f"{service}/ServerReflectionInfo", options=("-d", json.dumps(request))
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


@pytest.mark.usefixtures("db_pool")
@pytest.mark.parametrize("service", [ours.V1_SERVICE, reflection.SERVICE_NAME])
async def test_reflection_answers_a_method_with_its_commented_file(
    server: Server, service: str
) -> None:
    """The stock servicer answers NOT_FOUND for a method name and serves files without comments;
    both overrides are what make this answer, on either protocol."""
    answer = await _reflect(
        server, service, {"file_containing_symbol": "blog.v1.UserService.GetUser"}
    )
    encoded = answer["file_descriptor_response"]["file_descriptor_proto"]  # type: ignore[index]
    files = {
        f.name: f
        for f in map(descriptor_pb2.FileDescriptorProto.FromString, map(base64.b64decode, encoded))
    }
    # The file itself and what it imports, transitively.
    assert {"blog/v1/user_service.proto", "blog/v1/resources.proto"} <= set(files)
    assert "google/protobuf/timestamp.proto" in files
    comments = [
        c.leading_comments for c in files["blog/v1/user_service.proto"].source_code_info.location
    ]
    assert any(c.startswith(" Returns one user.") for c in comments)


@pytest.mark.usefixtures("db_pool")
@pytest.mark.parametrize("service", [ours.V1_SERVICE, reflection.SERVICE_NAME])
async def test_reflection_lists_both_protocols_and_says_not_found(
    server: Server, service: str
) -> None:
    listed = await _reflect(server, service, {"list_services": ""})
    names = {s["name"] for s in listed["list_services_response"]["service"]}  # type: ignore[index]
    assert {ours.V1_SERVICE, reflection.SERVICE_NAME, "blog.v1.UserService"} <= names
    missing = await _reflect(
        server, service, {"file_containing_symbol": "blog.v1.UserService.Nope"}
    )
    assert missing["error_response"]["error_code"] == 5  # type: ignore[index]  # NOT_FOUND
