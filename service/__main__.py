"""`python -m service`: the server, configured from the environment and `.env`."""

from __future__ import annotations

import asyncio
import logging

from service import logs
from service.settings import Settings, load_settings

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


def main() -> int:
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
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
