"""Start-up checks that turn a doomed start into one line and a non-zero exit.

gRPC reports a port it cannot bind with a C-core log line and a RuntimeError that names no
setting; prometheus_client with a bare OSError. Both are found out here first, before anything
is started, by binding each listening address the way the server will (SO_REUSEADDR, and
SO_REUSEPORT when several workers share the port), so the message can say which variable.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from service.settings import Settings


class StartupError(Exception):
    """A reason the process cannot start: printed as one line, exit status 1."""


def _can_bind(host: str, port: int, *, reuse_port: bool) -> str | None:
    """None when (host, port) can be bound on at least one of its addresses, else why not."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot resolve {host!r}: {error.strerror}"
    problem = "no address to listen on"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError as error:
                problem = error.strerror or str(error)
                continue
            return None  # gRPC too is content with any one of a name's addresses
    return problem


def check_ports(settings: Settings) -> None:
    """Raises StartupError when GRPC_PORT or a METRICS_PORT cannot be listened on."""
    host = settings.grpc_host
    wanted = [("GRPC_PORT", settings.grpc_port, settings.grpc_workers > 1)]
    if settings.metrics_port is not None:
        wanted += [
            ("METRICS_PORT", settings.metrics_port + i, False) for i in range(settings.grpc_workers)
        ]
    for name, port, reuse_port in wanted:
        if port == 0:
            continue  # any free port
        reason = _can_bind(host, port, reuse_port=reuse_port)
        if reason is not None:
            raise StartupError(f"cannot listen on {host}:{port} ({name}): {reason}")


@contextmanager
def one_line_failures(program: str) -> Iterator[None]:
    """Turns a StartupError into `program: message` on stderr and exit status 1."""
    try:
        yield
    except StartupError as error:
        sys.stderr.write(f"{program}: {error}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None
