"""What the bench reads off the service it measures, on a real two-worker service as the bench
starts it: calls by gRPC code from every worker's metrics endpoint (prometheus_client's parser),
and CPU and RSS summed over the process tree (psutil)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import psutil
import pytest
from blog.v1 import user_service_pb2, user_service_pb2_grpc

from bench import metrics, procstat, servers

WORKERS = 2
GET_USER = [("blog.v1.UserService", "GetUser")]


def _all_workers_serve_metrics(server: servers.Server, urls: list[str]) -> metrics.Samples:
    """A scrape of every worker's endpoint: each worker starts its own after it forks, so the
    service can answer health checks (from one worker) before the other's endpoint is up."""
    for _ in range(150):
        samples = metrics.settle(urls)
        if samples is not None:
            return samples
        time.sleep(0.2)
    raise AssertionError(f"a metrics endpoint never answered:\n{server.log.read_text()[-3000:]}")


def test_readings_of_a_two_worker_service_sum_every_process(
    database_url: str, tmp_path: Path
) -> None:
    server, metrics_port = servers.start_service(database_url, WORKERS, tmp_path, "service")
    try:
        urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(WORKERS)]
        before = _all_workers_serve_metrics(server, urls)
        cpu_before = procstat.cpu_seconds(server.pid)
        missing = 6
        for i in range(missing):
            # A connection per call, so that calls land on both workers (SO_REUSEPORT).
            with grpc.insecure_channel(server.target) as channel:
                stub = user_service_pb2_grpc.UserServiceStub(channel)
                with pytest.raises(grpc.RpcError) as raised:
                    stub.GetUser(user_service_pb2.GetUserRequest(id=10**12 + i), timeout=10)
                assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        after = metrics.settle(urls)
        assert after is not None
        assert metrics.handled_delta(before, after, GET_USER) == {"NotFound": missing}
        assert any(key.startswith("db_pool_checked_out{") for key in metrics.pool_gauges(after))

        members = procstat.tree(server.pid)
        assert server.pid in members and len(members) >= WORKERS
        assert procstat.cpu_seconds(server.pid) >= cpu_before > 0
        root_rss = psutil.Process(server.pid).memory_info().rss
        assert procstat.rss_bytes(server.pid) > root_rss  # the workers' memory is counted too
    finally:
        server.stop()
    assert procstat.tree(server.pid) == [] and procstat.rss_bytes(server.pid) == 0
