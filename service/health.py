"""Health: SERVING while the database answers, NOT_SERVING while it does not or during shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from grpc_health.v1 import health, health_pb2

from service.api import SERVICES
from service.db.engine import Database

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0


class _Servicer(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """grpcio-health-checking's servicer, plus the List it leaves unimplemented (its base
    raises NotImplementedError, which ended the call INTERNAL)."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


class Health:
    def __init__(self, database: Database) -> None:
        self.servicer = _Servicer()
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
