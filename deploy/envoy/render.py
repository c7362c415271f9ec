"""Renders envoy.yaml.template: `python deploy/envoy/render.py --replica HOST:PORT ... > envoy.yaml`.

The read-only routes come from the protos (methods marked NO_SIDE_EFFECTS), never a hand list.
Run it with the project's virtualenv (`.venv/bin/python`), which has the protos installed.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
from pathlib import Path

from service.api import READ_ONLY_METHODS

TEMPLATE = Path(__file__).with_name("envoy.yaml.template")


def read_only_regex() -> str:
    """An RE2 regex matching exactly the :path of every NO_SIDE_EFFECTS method."""
    return "^(" + "|".join(re.escape(path) for path in sorted(READ_ONLY_METHODS)) + ")$"


def render(
    replicas: list[tuple[str, int]],
    *,
    listen: tuple[str, int] = ("127.0.0.1", 8080),
    admin_port: int = 9901,
    health_interval: float = 1.0,
) -> str:
    endpoints = "\n".join(
        f"        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}"
        for host, port in replicas
    )
    # YAML double quotes: backslashes from re.escape must be doubled.
    regex = read_only_regex().replace("\\", "\\\\")
    return string.Template(TEMPLATE.read_text()).substitute(
        listen_host=listen[0],
        listen_port=listen[1],
        admin_port=admin_port,
        health_interval=health_interval,
        read_only_regex=regex,
        endpoints=endpoints,
    )


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=_address, action="append", required=True)
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 8080))
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--health-interval", type=float, default=1.0, help="seconds")
    args = parser.parse_args(argv)
    sys.stdout.write(
        render(
            args.replica,
            listen=args.listen,
            admin_port=args.admin_port,
            health_interval=args.health_interval,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
