"""A small OTLP receiver for the tests: the collector's own protos (the `opentelemetry-proto`
wheel) served over gRPC (and HTTP/protobuf at /v1/traces), keeping every span that arrives.

Not a product: it checks what the service really puts on the wire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 SERVER, 3 CLIENT
    attributes: dict[str, Any]
    status_code: int  # 0 UNSET, 1 OK, 2 ERROR
    status_message: str
    resource: dict[str, Any]
    start_ns: int
    end_ns: int
    events: list[str] = field(default_factory=list)


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, *, keep: bool = True) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.received = 0  # spans, kept or not
        self._keep = keep  # False: only count them (the benchmark's receiver)
        self._changed = threading.Condition()

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        if not self._keep:
            count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with self._changed:
                self.requests += 1
                self.received += count
            return
        arrived = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    arrived.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            attributes=_attributes(s.attributes),
                            status_code=s.status.code,
                            status_message=s.status.message,
                            resource=resource,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            events=[e.name for e in s.events],
                        )
                    )
        with self._changed:
            self.requests += 1
            self.received += len(arrived)
            self.spans.extend(arrived)
            self._changed.notify_all()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(
        self, predicate: Callable[[list[Span]], bool], timeout: float = 10.0
    ) -> list[Span]:
        """Every span received, once `predicate` holds for them (fails after `timeout`)."""
        end = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.spans):
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"spans never arrived; have {self.spans}")
                self._changed.wait(left)
            return list(self.spans)

    def of_trace(self, trace_id: str, count: int, timeout: float = 10.0) -> list[Span]:
        """The spans of `trace_id`, once at least `count` of them arrived."""
        spans = self.wait_for(
            lambda spans: sum(s.trace_id == trace_id for s in spans) >= count, timeout
        )
        return [s for s in spans if s.trace_id == trace_id]


class OtlpServer:
    """The receiver on a real port: `endpoint` for OTLP/gRPC, `http_endpoint` for HTTP."""

    def __init__(self, *, keep: bool = True) -> None:
        self.receiver = Receiver(keep=keep)
        self._grpc = grpc.server(futures.ThreadPoolExecutor(4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self.receiver, self._grpc)  # type: ignore[no-untyped-call]
        port = self._grpc.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"
        receiver = self.receiver

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                if self.path == "/v1/traces":
                    receiver.take(request)
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> OtlpServer:
        self._grpc.start()
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._http.shutdown()
        self._grpc.stop(0)
