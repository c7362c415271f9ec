"""Checks bench/ghz/*.json without ghz: known keys, existing protos, and data that parses.

Each config's `data` is rendered the way ghz would (its template functions replaced by sample
values) and parsed with protobuf's JSON mapping, which is ghz's too, into the request type of
its `call`. Run from the repository root: `python -m bench.ghzcheck`; exits 1 on a problem.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import blog.v1.post_service_pb2
import blog.v1.user_service_pb2
from google.protobuf import json_format, symbol_database

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
_FILES = (blog.v1.user_service_pb2, blog.v1.post_service_pb2)


def render(data: Any) -> str:
    """`data` as JSON with ghz's template actions replaced by sample values."""
    text = json.dumps(data)
    for pattern, value in _SAMPLES:
        text = pattern.sub(value, text)
    if "{{" in text:
        raise ValueError(f"template action this check does not know: {text}")
    return text


def problems(path: Path) -> list[str]:
    """What is wrong with one config (empty when nothing)."""
    config = json.loads(path.read_text())
    found = [f"unknown key {k!r}" for k in config if k not in KEYS]
    if not (ROOT / config.get("proto", "")).is_file():
        found.append(f"proto file not found: {config.get('proto')}")
    service, _, method = config["call"].rpartition(".")
    descriptor = next(
        (f.DESCRIPTOR.services_by_name[service.split(".")[-1]] for f in _FILES
         if service.split(".")[-1] in f.DESCRIPTOR.services_by_name),
        None,
    )  # fmt: skip
    if descriptor is None or method not in descriptor.methods_by_name:
        return [*found, f"unknown call {config['call']}"]
    input_type = descriptor.methods_by_name[method].input_type.full_name
    message = symbol_database.Default().GetSymbol(input_type)()
    try:
        json_format.Parse(render(config.get("data", {})), message)
    except (json_format.ParseError, ValueError) as exc:
        found.append(f"data does not parse as {input_type}: {exc}")
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
