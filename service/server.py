"""Builds the grpc.aio server: services, interceptors, health, reflection; serves until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import grpc
from blog.v1 import post_service_pb2_grpc, user_service_pb2_grpc
from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from service import metrics, reflection, tracing
from service.api import SERVICES
from service.db.engine import Database, create_database
from service.domain.paging import PageTokens
from service.domain.passwords import Passwords
from service.domain.posts import Posts
from service.domain.users import Users
from service.health import Health
from service.interceptors.admission import AdmissionInterceptor
from service.interceptors.chain import build_chain
from service.interceptors.streams import StreamLimitInterceptor
from service.methods import MethodTable
from service.repositories.base import commits_alone, release_connection
from service.repositories.posts import PostRepository
from service.repositories.requests import RequestRepository
from service.repositories.users import UserRepository
from service.servicers.posts import PostServicer
from service.servicers.sizing import response_limit
from service.servicers.users import UserServicer
from service.settings import Settings

log = logging.getLogger(__name__)

_PENDING_SOFT_LIMIT = 20_000


def _connection_age(seconds: float) -> list[tuple[str, int]]:
    """GOAWAY after `seconds` (0: never). No grace option: calls in flight, long streams too,
    finish on the old connection however long they take (core's default grace is unbounded)."""
    return [("grpc.max_connection_age_ms", round(seconds * 1000))] if seconds > 0 else []


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
        self.tracing = tracing.configure(settings)
        tracer = None if self.tracing is None else self.tracing.tracer
        self.database: Database = create_database(settings, tracer)
        self.passwords = Passwords(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
            threads=settings.password_hash_threads,
            queue=settings.password_hash_queue,
        )
        tokens = PageTokens(settings.page_token_secret)
        self.chain = build_chain(settings, self.database, self.tracing)
        self.admission = self.chain.layer(AdmissionInterceptor)  # closed first at shutdown
        self.streams = self.chain.layer(StreamLimitInterceptor)
        limit = settings.grpc_max_message_bytes
        responses = response_limit(limit)  # what clients accept, or less if we send less
        self.grpc = aio.server(
            interceptors=[self.chain],
            # The backstop behind AdmissionInterceptor: grpc.aio counts every call it has
            # picked up, also one whose request has not arrived yet, and refuses the rest
            # RESOURCE_EXHAUSTED (without our details: only an abusive client gets there).
            maximum_concurrent_rpcs=2 * settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Advertised in SETTINGS: streams one connection may have open at once. Low
                # enough to bound what one connection holds, high enough that an ordinary
                # client's burst waits in its own queue (grpcio clients overshoot a low limit
                # and read the REFUSED_STREAM that follows as UNAVAILABLE).
                ("grpc.max_concurrent_streams", settings.grpc_max_streams_per_connection),
                # Core refuses new streams (REFUSED_STREAM, read as UNAVAILABLE) while many
                # finished ones still await deallocation, as they do after any burst; their
                # number is bounded by the stream limit above already.
                ("grpc.http2.max_deallocating_streams", 1 << 20),
                # Calls gRPC core has accepted but grpc.aio has not yet picked up. Past core's
                # default soft limit (1,000) a burst's excess is cancelled there, and the
                # clients read CANCELLED though nobody cancelled; with room for the bursts
                # the per-connection and per-process limits allow, grpc.aio picks every
                # call up and refuses the excess RESOURCE_EXHAUSTED instead.
                ("grpc.server.max_pending_requests", _PENDING_SOFT_LIMIT),
                ("grpc.server.max_pending_requests_hard_limit", 2 * _PENDING_SOFT_LIMIT),
                # Several workers share the port on purpose; a lone server must instead
                # fail loudly when something else already listens there.
                ("grpc.so_reuseport", int(settings.grpc_workers > 1)),
                *_connection_age(settings.grpc_max_connection_age_seconds),
            ],
        )
        # The composition root: the one place the use cases meet the concrete repositories
        # (their ports, service.domain.ports, are checked against them here by mypy).
        user_rows, post_rows = UserRepository(), PostRepository()
        users = Users(
            users=user_rows,
            posts=post_rows,
            release_connection=release_connection,
            commits_alone=commits_alone,
            passwords=self.passwords,
            tokens=tokens,
        )
        posts = Posts(
            posts=post_rows,
            requests=RequestRepository(),
            commits_alone=commits_alone,
            tokens=tokens,
        )
        methods = MethodTable()
        methods.add(
            user_service_pb2_grpc.add_UserServiceServicer_to_server, UserServicer(users, responses)
        )
        methods.add(
            post_service_pb2_grpc.add_PostServiceServicer_to_server, PostServicer(posts, responses)
        )
        self.health = Health(self.database)
        methods.add(health_pb2_grpc.add_HealthServicer_to_server, self.health.servicer)
        reflection.enable(methods, [*(s.full_name for s in SERVICES), "grpc.health.v1.Health"])
        self.grpc.add_generic_rpc_handlers((methods,))
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
        """Graceful stop: NOT_SERVING; serve on for the drain; then refuse new calls (admission),
        let the started ones finish within the grace, and only then stop gRPC and close."""
        drain, grace = self.settings.shutdown_drain_seconds, self.settings.shutdown_grace_seconds
        log.info("shutting down (drain %.1fs, grace %.1fs)", drain, grace)
        await self.health.shutdown()
        await asyncio.sleep(drain)
        self.admission.close()
        deadline = time.monotonic() + grace
        if not await self.admission.settled(grace):
            log.warning("calls still running after the %.1fs grace are cut off", grace)
        await self.grpc.stop(max(0.0, deadline - time.monotonic()))
        await self.database.dispose()
        self.passwords.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        log.info("stopped")


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT; a second signal forces an immediate exit."""
    server = Server(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        stopping.set()

    # Before start(): health answers SERVING inside it, and a SIGTERM that follows at once (a
    # supervisor, a test) must drain like any other rather than kill the process.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await server.start()
    await stopping.wait()
    await server.stop()
