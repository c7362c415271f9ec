"""Builds the grpc.aio server: services, interceptors, health, reflection; serves until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import grpc
from blog.v1 import post_service_pb2_grpc, user_service_pb2_grpc
from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from service import metrics, reflection
from service.api import SERVICES
from service.db.engine import Database, create_database
from service.domain.paging import PageTokens
from service.domain.passwords import Passwords
from service.domain.posts import Posts
from service.domain.users import Users
from service.health import Health
from service.interceptors.auth import AuthInterceptor
from service.interceptors.errors import ErrorInterceptor
from service.interceptors.observe import ObserveInterceptor
from service.interceptors.session import SessionInterceptor
from service.servicers.posts import PostServicer
from service.servicers.sizing import response_limit
from service.servicers.users import UserServicer
from service.settings import Settings

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class Server:
    """One serving process: its engines, its grpc.aio server, its health."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database: Database = create_database(settings)
        self.passwords = Passwords(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
            threads=settings.password_hash_threads,
        )
        tokens = PageTokens(settings.page_token_secret)
        # Outermost first: observe every call, map errors, authenticate, then the session.
        interceptors: list[aio.ServerInterceptor] = [  # type: ignore[type-arg]
            ObserveInterceptor(metrics_enabled=settings.metrics_port is not None),
            ErrorInterceptor(),
        ]
        if settings.tokens:
            interceptors.append(AuthInterceptor(settings.tokens))
        interceptors.append(SessionInterceptor(self.database, settings.default_timeout_seconds))
        limit = settings.grpc_max_message_bytes
        self.grpc = aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Several workers share the port on purpose; a lone server must instead
                # fail loudly when something else already listens there.
                ("grpc.so_reuseport", int(settings.grpc_workers > 1)),
            ],
        )
        responses = response_limit(limit)
        user_service_pb2_grpc.add_UserServiceServicer_to_server(
            UserServicer(Users(self.passwords, tokens), responses), self.grpc
        )
        post_service_pb2_grpc.add_PostServiceServicer_to_server(
            PostServicer(Posts(tokens), responses), self.grpc
        )
        self.health = Health(self.database)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.grpc)
        reflection.enable(self.grpc, [*(s.full_name for s in SERVICES), "grpc.health.v1.Health"])
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        credentials = _credentials(settings)
        if credentials is None:
            self.port = self.grpc.add_insecure_port(address)
        else:
            self.port = self.grpc.add_secure_port(address, credentials)

    async def start(self) -> None:
        if self.settings.metrics_port is not None:
            metrics.watch_pools(self.database)
            metrics.serve(self.settings.metrics_port, self.settings.grpc_host)
        await self.grpc.start()
        await self.health.start()
        log.info("serving on %s:%d", self.settings.grpc_host, self.port)

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, refuse new calls, let in-flight ones finish, then close."""
        log.info("shutting down (grace %.1fs)", self.settings.shutdown_grace_seconds)
        await self.health.shutdown()
        await self.grpc.stop(self.settings.shutdown_grace_seconds)
        await self.database.dispose()
        self.passwords.close()
        log.info("stopped")


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT; a second signal forces an immediate exit."""
    server = Server(settings)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stopping.wait()
    await server.stop()
