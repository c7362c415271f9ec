"""The README's grpcurl examples run as written, in order, and print what the README shows.

Every `$ .venv/bin/grpcurl ...` command of the README's console blocks is run from the
repository root against the test server (its address in place of 127.0.0.1:50051, on tables
emptied first, so ids start at 1 as on a fresh `make run`); its output must be the pasted one,
timestamps aside.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass

import pytest

from service.server import Server
from tests.support import ROOT

pytestmark = pytest.mark.usefixtures("db_pool")

README = ROOT / "README.md"
ADDRESS = "127.0.0.1:50051"
_TIME = re.compile(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"')


@dataclass
class Example:
    command: str
    output: str


def examples() -> list[Example]:
    found: list[Example] = []
    blocks = re.findall(r"```console\n(.*?)```", README.read_text(), re.DOTALL)
    for block in blocks:
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i].strip()
            i += 1
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            found.append(Example(command, "\n".join(output).strip()))
    return found


def normalised(text: str) -> str:
    return _TIME.sub('"<time>"', text.strip())


def test_the_readme_shows_grpcurl_examples_with_the_installed_grpcurl() -> None:
    found = examples()
    grpcurl = [e for e in found if "grpcurl" in e.command]
    assert len(grpcurl) >= 8, found
    for example in grpcurl:
        assert example.command.startswith(".venv/bin/grpcurl "), example.command
    assert "../shared" not in README.read_text()


async def test_every_readme_grpcurl_example_prints_what_the_readme_shows(server: Server) -> None:
    for example in examples():
        if not example.command.startswith(".venv/bin/grpcurl "):
            continue
        argv = [
            part.replace(ADDRESS, f"127.0.0.1:{server.port}")
            for part in shlex.split(example.command)
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        printed = (stdout + stderr).decode()
        assert normalised(printed) == normalised(example.output), example.command
        if example.output.startswith("ERROR:"):
            assert process.returncode != 0, example.command
        else:
            assert process.returncode == 0, (example.command, printed)
