"""The log handler and formatters: lines written in batches, timestamps unchanged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import UTC, datetime

from service.logs import (
    FLUSH_SECONDS,
    JsonFormatter,
    LoopBatchingHandler,
    RequestIdFilter,
    TextFormatter,
)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def make_logger(stream: CountingStream) -> logging.Logger:
    handler = LoopBatchingHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_logged_in_a_loop_are_flushed_together_within_the_interval() -> None:
    stream = CountingStream()
    logger = make_logger(stream)

    async def calls() -> tuple[int, int, int]:
        for n in range(100):
            logger.info("call %d", n)
            if n == 50:
                await asyncio.sleep(0)  # other iterations of the loop: still one batch
        during = stream.flushes
        await asyncio.sleep(FLUSH_SECONDS * 3)  # the scheduled flush has run
        after = stream.flushes
        logger.warning("trouble")  # written at once, not with the next batch
        return during, after, stream.flushes

    during, after, after_warning = asyncio.run(calls())

    assert (during, after, after_warning) == (0, 1, 2)
    assert stream.getvalue().count("\n") == 101


def test_without_a_running_loop_every_line_is_flushed() -> None:
    stream = CountingStream()
    logger = make_logger(stream)
    logger.info("one")
    logger.info("two")
    assert stream.flushes == 2


def record_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("service.calls", logging.INFO, __file__, 1, "hello", None, None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    record.request_id = "rid"
    return record


def test_timestamps_read_as_the_standard_formatters_write_them() -> None:
    standard_text = logging.Formatter("%(asctime)s")
    text, json_formatter = TextFormatter(), JsonFormatter()
    for created in (1_764_000_000.0, 1_764_000_000.999, 1_764_000_001.5, 1_764_086_399.042):
        record = record_at(created)
        assert text.format(record).startswith(standard_text.format(record) + " INFO ")
        entry = json.loads(json_formatter.format(record))
        assert entry["time"] == datetime.fromtimestamp(created, UTC).isoformat(
            timespec="milliseconds"
        )
        assert entry["request_id"] == "rid" and entry["message"] == "hello"


def test_the_plain_text_line_in_one_function_is_the_formatters_line() -> None:
    """TextFormatter renders a plain call line itself (no logging.Formatter steps): it must be
    what `_TEXT` renders through logging.Formatter, whatever the message and its arguments."""
    text = TextFormatter()
    for created in (1_764_000_000.0, 1_764_000_001.5):
        record = record_at(created)
        record.msg, record.args = "%s %s %.1fms", ("/blog.v1.UserService/GetUser", "OK", 1.25)
        assert text.format(record) == logging.Formatter.format(text, unrendered_copy(record))


def unrendered_copy(record: logging.LogRecord) -> logging.LogRecord:
    copy = logging.makeLogRecord(record.__dict__)
    copy.message = ""  # rendered again by the slow path
    return copy
