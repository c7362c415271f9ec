"""gRPC length-prefixed message framing, for request bodies sent by h2load.

A gRPC unary request body over HTTP/2 is one frame: a compression flag byte (0 = not compressed),
the message length as a big-endian uint32, then the serialized protobuf. h2load posts such a file
verbatim (`-d FILE`) with headers `content-type: application/grpc` and `te: trailers`.
"""

from __future__ import annotations

import struct
from pathlib import Path

from google.protobuf.message import Message

_PREFIX = struct.Struct(">BI")


def frame(payload: bytes) -> bytes:
    """`payload` (a serialized message) framed as an uncompressed gRPC message."""
    return _PREFIX.pack(0, len(payload)) + payload


def frame_message(message: Message) -> bytes:
    """`message` serialized and framed."""
    return frame(message.SerializeToString())


def unframe(body: bytes) -> bytes:
    """The payload of a single framed, uncompressed message (the inverse of `frame`)."""
    flag, length = _PREFIX.unpack_from(body)
    if flag != 0 or len(body) != _PREFIX.size + length:
        raise ValueError("not a single uncompressed gRPC message")
    return body[_PREFIX.size :]


def write_body(path: Path, payload: bytes) -> Path:
    """Writes `payload` framed to `path` (for `h2load -d path`) and returns `path`."""
    path.write_bytes(frame(payload))
    return path
