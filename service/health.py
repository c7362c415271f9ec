"""Health: SERVING while the database answers, NOT_SERVING while it does not or during shutdown."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from service.api import SERVICES
from service.db.engine import Database

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0


class Health:
    def __init__(self, database: Database) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._db = database
        self._names = ["", *(s.full_name for s in SERVICES)]
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def _set(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        for name in self._names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        log.log(
            logging.INFO if serving else logging.WARNING,
            "health: %s",
            "SERVING" if serving else "NOT_SERVING (database unreachable)",
        )

    async def probe(self) -> bool:
        """Whether both pools answer, within PROBE_TIMEOUT."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._db.ping()
            return True
        except Exception as error:
            log.debug("database probe failed: %s", error)
            return False

    async def _watch(self) -> None:
        while True:
            await self._set(await self.probe())
            await asyncio.sleep(PROBE_INTERVAL)

    async def start(self) -> None:
        await self._set(await self.probe())
        self._task = asyncio.create_task(self._watch(), name="health-probe")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.servicer.enter_graceful_shutdown()
