"""Start-up as an operator meets it: the real commands, their one line and their exit status."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.support import FAST_ARGON2, ROOT, ServerProcess, free_port

SECRET = {"PAGE_TOKEN_SECRET": "a-test-secret-of-enough-length"}
# Long enough for a server that wrongly starts to show it by still running.
TIMEOUT = 20
PYTHON_M_SERVICE = [sys.executable, "-m", "service"]
MAKE_RUN = ["make", "--no-print-directory", "run"]
MAKE_FAILED = re.compile(r"^make(\[\d+\])?: \*\*\* ")


def run(command: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Runs a command to its end; its exit status and its output lines (stdout and stderr).

    The line make itself adds when a recipe fails ("make: *** [...] Error 1") is left out: it
    is make's, not ours, and says nothing more than the exit status.
    """
    full = {**os.environ, **FAST_ARGON2, **SECRET, "GRPC_PORT": str(free_port()), **env}
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=full, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"{command} did not exit: it is serving\n{expired.output}") from None
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if not MAKE_FAILED.match(line)]


def assert_one_line(command: list[str], env: dict[str, str], *words: str) -> str:
    code, lines = run(command, env)
    assert code != 0, lines
    assert len(lines) == 1, "\n".join(lines)
    assert "Traceback" not in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("tokens", [" , ", ",", ",,", "  "])
def test_auth_tokens_that_hold_no_token_are_a_bad_value(database_url: str, tokens: str) -> None:
    line = assert_one_line(
        PYTHON_M_SERVICE, {"DATABASE_URL": database_url, "AUTH_TOKENS": tokens}, "AUTH_TOKENS"
    )
    assert "no token" in line


@pytest.mark.parametrize("command", [PYTHON_M_SERVICE, MAKE_RUN], ids=["service", "make-run"])
def test_a_port_in_use_is_one_line(database_url: str, listening: int, command: list[str]) -> None:
    env = {"DATABASE_URL": database_url, "GRPC_PORT": str(listening)}
    assert_one_line(command, env, "GRPC_PORT", str(listening), "in use")


def test_a_metrics_port_in_use_is_one_line(database_url: str, listening: int) -> None:
    env = {"DATABASE_URL": database_url, "METRICS_PORT": str(listening)}
    assert_one_line(PYTHON_M_SERVICE, env, "METRICS_PORT", str(listening))


@pytest.mark.parametrize("command", [PYTHON_M_SERVICE, MAKE_RUN], ids=["service", "make-run"])
def test_a_database_url_of_the_wrong_kind_is_one_line(command: list[str]) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}
    assert_one_line(command, env, "DATABASE_URL", "postgresql+asyncpg://")


def test_make_run_with_an_unreachable_database_is_one_line() -> None:
    port = free_port()  # nothing listens there
    env = {"DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/blog"}
    assert_one_line(MAKE_RUN, env, f"127.0.0.1:{port}")


@pytest.mark.parametrize("command", [PYTHON_M_SERVICE, MAKE_RUN], ids=["service", "make-run"])
def test_an_unusable_tls_file_is_one_line(
    database_url: str, tmp_path: Path, command: list[str]
) -> None:
    garbage = tmp_path / "server.pem"
    garbage.write_text("not a certificate\n")
    env = {
        "DATABASE_URL": database_url,
        "TLS_CERT_FILE": str(garbage),
        "TLS_KEY_FILE": str(garbage),
    }
    assert_one_line(command, env, "TLS_CERT_FILE", str(garbage))


def test_help_lists_every_variable_with_its_default_and_serves_nothing() -> None:
    port = free_port()
    code, lines = run([*PYTHON_M_SERVICE, "--help"], {"GRPC_PORT": str(port)})
    assert code == 0, lines
    text = "\n".join(lines)
    for field in Settings.model_fields.values():
        assert field.alias is not None
        (line,) = [line for line in lines if line.split()[:1] == [field.alias]]
        shown = isinstance(field.default, int | float | str) and field.default != ""
        if shown and field.alias != "PAGE_TOKEN_SECRET":
            assert str(field.default).lower() in line.lower(), line
        assert len(line.split()) >= 2, line  # a default (or "(required)", "(unset)") follows
    assert "DATABASE_URL" in text and "(required)" in text


def _server_output(database_url: str, env: dict[str, str], unset: tuple[str, ...]) -> str:
    process = ServerProcess({"DATABASE_URL": database_url, **env}, unset=unset)
    with process:
        pass
    return process.output()


def test_the_development_page_token_secret_is_warned_about(database_url: str) -> None:
    warned = _server_output(database_url, {}, unset=("PAGE_TOKEN_SECRET",))
    assert any("WARNING" in line and "PAGE_TOKEN_SECRET" in line for line in warned.splitlines())
    quiet = _server_output(database_url, SECRET, unset=())
    assert "PAGE_TOKEN_SECRET" not in quiet, quiet
