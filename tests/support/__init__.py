"""The tests' one support surface: everything a test needs besides its fixtures (conftest.py).

Modules by job; the everyday names are re-exported here (`from tests.support import make_user`):

- errors      RichError / rich_error / failure: the status, ErrorInfo and BadRequest a client reads
- factories   rows to start from: make_user (straight into the database), create_user, make_post
- pollers     waiting for what settles: checked-out connections, busy sessions, lock waiters
- locks       tables or rows the test holds locked, so that the service's statements really wait
- servers     the service in this process: make_settings, started_server, serving
- processes   `python -m service` as a child process, free_port, health
- database    plain URLs, statements of our own, a brand-new database
- paths       ROOT, the checkout

and, imported as modules where a test needs them: grpcurl, statements (counting SQL),
telemetry (log lines and /metrics of a process), otlp (a span receiver), balancer (Envoy),
pgbouncer, patroni, postgres (embedded servers as standbys), fakes (the domain's ports in
memory, for the use cases' rules without a server).
"""

from tests.support.database import execute, new_database, plain, run_sync
from tests.support.errors import RichError, code_of, failure, rich_error
from tests.support.factories import PASSWORD, create_user, make_post, make_user, unique
from tests.support.locks import row_locked, tables_locked
from tests.support.paths import ROOT
from tests.support.pollers import (
    busy_backends,
    checked_out,
    sessions_by_state,
    settle,
    settled_busy_backends,
    settled_checked_out,
    until,
    waiting_on_lock,
)
from tests.support.processes import ServerProcess, free_port, health_status, wait_for_health
from tests.support.servers import FAST_ARGON2, make_settings, serving, started_server

__all__ = [
    "FAST_ARGON2",
    "PASSWORD",
    "ROOT",
    "RichError",
    "ServerProcess",
    "busy_backends",
    "checked_out",
    "code_of",
    "create_user",
    "execute",
    "failure",
    "free_port",
    "health_status",
    "make_post",
    "make_settings",
    "make_user",
    "new_database",
    "plain",
    "rich_error",
    "row_locked",
    "run_sync",
    "serving",
    "sessions_by_state",
    "settle",
    "settled_busy_backends",
    "settled_checked_out",
    "started_server",
    "tables_locked",
    "unique",
    "until",
    "wait_for_health",
    "waiting_on_lock",
]
