"""Renders patroni.yml.template for one node:

    python deploy/patroni/render.py --name pg1 --pg-port 5433 --rest-port 8008 \
        --etcd 127.0.0.1:2379 --data-dir /var/lib/patroni/pg1 > pg1.yml
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

TEMPLATE = Path(__file__).with_name("patroni.yml.template")


def render(
    *,
    name: str,
    pg_port: int,
    rest_port: int,
    etcd: list[str],
    data_dir: Path,
    socket_dir: Path,
    scope: str = "blog",
    superuser_password: str = "postgres",
    replication_password: str = "replicator",
) -> str:
    return string.Template(TEMPLATE.read_text()).substitute(
        scope=scope,
        name=name,
        pg_port=pg_port,
        rest_port=rest_port,
        etcd_hosts=",".join(etcd),
        data_dir=data_dir,
        socket_dir=socket_dir,
        superuser_password=superuser_password,
        replication_password=replication_password,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Renders one Patroni node's configuration.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--scope", default="blog")
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--rest-port", type=int, required=True)
    parser.add_argument("--etcd", action="append", required=True, help="HOST:PORT, repeatable")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--socket-dir", type=Path, default=Path("/var/run/postgresql"))
    parser.add_argument("--superuser-password", default="postgres")
    parser.add_argument("--replication-password", default="replicator")
    args = parser.parse_args(argv)
    sys.stdout.write(
        render(
            name=args.name,
            scope=args.scope,
            pg_port=args.pg_port,
            rest_port=args.rest_port,
            etcd=args.etcd,
            data_dir=args.data_dir,
            socket_dir=args.socket_dir,
            superuser_password=args.superuser_password,
            replication_password=args.replication_password,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
