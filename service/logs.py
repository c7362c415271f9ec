"""Logging: the call's request id on every line, text or one JSON object per line.

Every call logs one line (SPEC), so the cost of a line is part of the cost of a call: on a
primary-key read the standard setup spent an eighth of the call's CPU in logging. Three
changes, all within the logging library, bring that down:

* the record skips what no line of ours shows: the caller's source file (a stack walk), the
  thread and the process (logging HOWTO, "Optimization");
* the formatters render a timestamp's date and time once per second, not once per line;
* the handler writes lines in batches, one write per FLUSH_SECONDS (10 ms) instead of one per
  line; a WARNING or worse, and any line logged outside the event loop, is written at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

from opentelemetry import trace

request_id: ContextVar[str] = ContextVar("request_id", default="-")

# How long an INFO line may wait in the buffer: invisible to anyone reading the log, and at
# a few thousand calls a second it turns dozens of writes into one.
FLUSH_SECONDS = 0.01

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "request_id",
}
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_TEXT_TRACED = (
    "%(asctime)s %(levelname)s %(name)s "
    "[%(request_id)s trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TraceIdFilter(logging.Filter):
    """The ids of the sampled span the line is logged in, if any: where its trace can be found.

    Installed only while tracing is on (service.tracing), so lines cost nothing extra without it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span().get_span_context()
        if span.trace_flags.sampled:
            record.trace_id = trace.format_trace_id(span.trace_id)
            record.span_id = trace.format_span_id(span.span_id)
        return True


class _SecondCache:
    """A timestamp's text up to the second, rendered once per second."""

    def __init__(self, *, utc: bool) -> None:
        self._second = -1
        self._text = ""
        self._utc = utc

    def prefix(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            if self._utc:
                self._text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:
                self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    """`2026-11-25 15:32:13,503 INFO service.calls [request id] message` (local time); a line of
    a traced call has `[request id trace_id=... span_id=...]`."""

    def __init__(self) -> None:
        super().__init__(_TEXT)
        self._traced = logging.PercentStyle(_TEXT_TRACED)
        self._seconds = _SecondCache(utc=False)

    def format(self, record: logging.LogRecord) -> str:
        """The line as `_TEXT` renders it, in one function for a plain line (the call's: no
        exception, stack or trace ids), logging.Formatter's steps for any other."""
        request_id = record.__dict__.get("request_id")
        if (
            request_id is None
            or record.exc_info
            or record.exc_text
            or record.stack_info
            or hasattr(record, "trace_id")
        ):
            return super().format(record)
        record.message = message = record.getMessage()
        record.asctime = asctime = self.formatTime(record)
        return f"{asctime} {record.levelname} {record.name} [{request_id}] {message}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        if hasattr(record, "trace_id"):
            return self._traced.format(record)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._seconds.prefix(record.created)},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, request_id, extras (among
    them trace_id and span_id, in a traced call)."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache(utc=True)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": f"{self._seconds.prefix(record.created)}.{int(record.msecs):03d}+00:00",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class LoopBatchingHandler(logging.StreamHandler[TextIO]):
    """A stream handler that flushes at most every FLUSH_SECONDS while an event loop runs.

    Lines are buffered by the stream; the first line after a flush schedules the next flush on
    the loop. Outside a running loop (start-up, shutdown, other threads) and from WARNING up,
    every line is flushed at once, so nothing is left unwritten when the loop stops.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._flush_scheduled = False

    def flush(self) -> None:
        """Called by `emit` after each line: defers the flush when a loop can do it later."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread (start-up, shutdown, exit): write now
            super().flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_later(FLUSH_SECONDS, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self._flush_now()


def configure(level: str, fmt: str) -> None:
    # What no line shows need not be gathered for every record (logging HOWTO, Optimization).
    logging._srcfile = None  # no stack walk for the caller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # sys.stderr writes through on every line; a buffered stream over the same file
    # descriptor lets the handler decide when to write.
    stream = open(  # noqa: SIM115
        sys.stderr.fileno(),
        "w",
        buffering=1 << 16,
        encoding="utf-8",
        errors="backslashreplace",  # as sys.stderr: a line is never lost to its encoding
        closefd=False,
    )
    handler = LoopBatchingHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def add_trace_ids() -> None:
    """Lines logged from now on inside a sampled span carry its trace_id and span_id."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TraceIdFilter) for f in handler.filters):
            handler.addFilter(TraceIdFilter())
