"""The types all load generators share: what to send (`Workload`), what came back (`LoadResult`).

Requests travel as serialized protobuf payloads (`Call.payload`) addressed by their full method
path, so h2load (a body file per call) and the Python client (a generic, non-decoding stub) send
exactly the same bytes. Both serialize to JSON for the Python client's subprocess.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def code_name(label: str) -> str:
    """A gRPC status code as ghz (and Go) spell it: "OK", "NotFound", "Canceled".

    Accepts Python's enum names ("NOT_FOUND", "CANCELLED") and Go's alike, so that codes
    counted by the Python client and read from server metrics compare equal.
    """
    if label.upper() == "OK":
        return "OK"
    if "_" not in label and not label.isupper():
        return label
    name = label.title().replace("_", "")
    return "Canceled" if name == "Cancelled" else name


@dataclass(frozen=True)
class Call:
    """One distinct request: `method` like "/blog.v1.UserService/GetUser", `payload` serialized."""

    method: str
    payload: bytes
    weight: float = 1.0

    @property
    def service(self) -> str:
        return self.method.split("/")[1]

    @property
    def name(self) -> str:
        return self.method.split("/")[2]


@dataclass(frozen=True)
class Workload:
    """A run: `calls` picked by weight, `concurrency` calls in flight over `connections`."""

    name: str
    calls: tuple[Call, ...]
    concurrency: int = 64
    duration_s: float = 10.0
    warmup_s: float = 2.0
    connections: int = 16
    stream: bool = False  # server-streaming: each worker makes one call and drains it
    stream_limit: int = 0  # stop (cancel) a stream after this many messages; 0 = drain it all

    @property
    def uniform(self) -> bool:
        return len({c.weight for c in self.calls}) == 1

    def to_json(self) -> str:
        data = asdict(self)
        data["calls"] = [
            {
                "method": c.method,
                "payload": base64.b64encode(c.payload).decode(),
                "weight": c.weight,
            }
            for c in self.calls
        ]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Workload:
        data: dict[str, Any] = json.loads(text)
        calls = tuple(
            Call(c["method"], base64.b64decode(c["payload"]), float(c["weight"]))
            for c in data.pop("calls")
        )
        return cls(calls=calls, **data)


@dataclass
class LoadResult:
    """What one generator measured. Latencies are of successful calls, in nanoseconds."""

    generator: str
    count: int
    total_ns: int
    latencies_ns: list[int]
    status_codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    status_source: str = "client"
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0  # every process on the machine, the database's included
    notes: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.count / (self.total_ns / 1e9) if self.total_ns else 0.0

    @property
    def rate(self) -> float:
        """Requests/s, or messages/s for a stream (what ratios to bare compare)."""
        if "messages" not in self.extra:
            return self.rps
        return self.extra["messages"] / (self.total_ns / 1e9) if self.total_ns else 0.0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> LoadResult:
        return cls(**json.loads(path.read_text()))
