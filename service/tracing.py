"""OpenTelemetry tracing: the SDK set up from its own OTEL_* variables, or nothing at all.

With OTEL_EXPORTER_OTLP_ENDPOINT unset (or OTEL_SDK_DISABLED=true) `configure` returns None and
nothing of OpenTelemetry runs: no interceptor, no statement spans, no log filter. Otherwise the
SDK builds everything from the environment the way it documents it (sampler and its argument,
service name and resource attributes, endpoint, headers, timeouts, OTEL_BSP_* queue sizes);
only the exporter's class follows OTEL_EXPORTER_OTLP_PROTOCOL here, since choosing it is the
job of the SDK's auto-configuration, which would also set up metrics and logs we do not want.

Spans leave through a BatchSpanProcessor: ending a span appends it to a bounded queue, and a
thread of the SDK exports batches. A collector that is slow or gone therefore never slows a
call; once the queue is full the oldest spans are dropped (the SDK logs that), and the spans
the exporter could not deliver are counted here. Shutdown waits for the last export at most
SHUTDOWN_SECONDS, then abandons it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Tracer

from service import logs
from service.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 1.0


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting the spans it could not deliver."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self.undelivered = 0
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._exporter.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.undelivered += len(spans)
            log.warning(
                "tracing: %d spans not delivered to the collector (%d since start)",
                len(spans),
                self.undelivered,
            )
        return result

    def shutdown(self) -> None:
        # Called twice when shutdown gives up on a slow export (Tracing.shutdown): once is enough.
        if not self._closed:
            self._closed = True
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _otlp_exporter(protocol: str) -> SpanExporter:
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter()


class PresetTraceIds(RandomIdGenerator):
    """The SDK's random ids, except a trace id drawn beforehand to decide sampling with.

    The trace interceptor asks the sampler about a new trace before it starts a span (so that
    a call not sampled builds nothing), then sets `next_trace_id` for the one `start_span`
    that follows, on the event loop's thread, with no await in between.
    """

    def __init__(self) -> None:
        self.next_trace_id: int | None = None

    def draw_trace_id(self) -> int:
        return super().generate_trace_id()

    def generate_trace_id(self) -> int:
        preset = self.next_trace_id
        if preset is None:
            return super().generate_trace_id()
        self.next_trace_id = None
        return preset


class Tracing:
    """The process's tracer provider and its one exporting processor."""

    def __init__(self, settings: Settings) -> None:
        # The SDK reads the environment only; Settings also read `.env`: hand that on.
        for name, value in settings.otel_environment().items():
            os.environ.setdefault(name, value)
        self.exporter = CountingExporter(_otlp_exporter(settings.otel_exporter_otlp_protocol))
        self._processor = BatchSpanProcessor(self.exporter)
        self.ids = PresetTraceIds()
        # No atexit hook: its shutdown would wait up to 30 s for an unreachable collector.
        self.provider = TracerProvider(
            resource=Resource.create(), id_generator=self.ids, shutdown_on_exit=False
        )
        self.provider.add_span_processor(self._processor)
        self.tracer: Tracer = self.provider.get_tracer("service")
        self.sampler: Sampler = self.provider.sampler  # from OTEL_TRACES_SAMPLER(_ARG)
        logs.add_trace_ids()
        log.info(
            "tracing to %s (%s), sampler %s",
            settings.otel_exporter_otlp_endpoint,
            settings.otel_exporter_otlp_protocol,
            os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        )

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Exports what is queued, waiting at most `timeout` seconds for the collector."""
        stopping = threading.Thread(target=self.provider.shutdown, name="tracing-shutdown")
        stopping.daemon = True  # never keeps the process alive
        stopping.start()
        stopping.join(timeout)
        if stopping.is_alive():
            # The export in flight waits for a collector that does not answer: closing the
            # exporter ends its retries and its channel, and the spans still queued are lost.
            self.exporter.shutdown()
            log.warning("tracing: the collector did not take the last spans within %.1fs", timeout)


def configure(settings: Settings) -> Tracing | None:
    """Tracing as OTEL_* configures it, or None when it is off."""
    return Tracing(settings) if settings.tracing else None
