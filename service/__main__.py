"""`python -m service`: the server, configured from the environment and `.env`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import typing
from collections.abc import Sequence

from pydantic_core import PydanticUndefined

from service import logs
from service.settings import DEV_PAGE_TOKEN_SECRET, Settings, load_settings
from service.startup import check_ports, one_line_failures

log = logging.getLogger("service")


def _run(settings: Settings) -> int:
    from service.server import serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0


# Defaults better said than shown.
_DEFAULTS = {
    "AUTH_TOKENS": "(empty: authentication off)",
    "PAGE_TOKEN_SECRET": "(a development key; start-up then logs a WARNING)",
}


def variables() -> str:
    """Every setting's environment variable with its default, one a line (for --help)."""
    lines = []
    for field in Settings.model_fields.values():
        if field.alias in _DEFAULTS:
            default = _DEFAULTS[field.alias]
        elif field.default is PydanticUndefined:
            default = "(required)"
        elif field.default is None:
            default = "(unset)"
        elif isinstance(field.default, bool):
            default = str(field.default).lower()
        else:
            default = str(field.default)
        choices = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal:
            default += f"  (one of {', '.join(choices)})"
        lines.append(f"  {field.alias:<26} {default}")
    return "\n".join(lines)


def _arguments(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The blog.v1 gRPC service. Configured by environment variables (and .env in"
        " the working directory), not by arguments.",
        epilog="environment variables and their defaults:\n" + variables(),
    )
    parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    _arguments(sys.argv[1:] if argv is None else argv)
    settings = load_settings()
    with one_line_failures("python -m service"):
        check_ports(settings)
    logs.configure(settings.log_level, settings.log_format)
    if settings.page_token_secret == DEV_PAGE_TOKEN_SECRET:
        log.warning(
            "PAGE_TOKEN_SECRET is unset: page tokens are MACed with the public development key,"
            " so anyone can forge them; set it (the same on every replica) outside development"
        )
    if settings.grpc_workers == 1:
        return _run(settings)

    from service.workers import supervise

    def worker(index: int) -> int:
        # Each worker serves its own metrics on METRICS_PORT + index.
        port = None if settings.metrics_port is None else settings.metrics_port + index
        return _run(settings.model_copy(update={"metrics_port": port}))

    return supervise(settings.grpc_workers, worker)


if __name__ == "__main__":
    raise SystemExit(main())
