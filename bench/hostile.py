"""`make soak SOAK_ARGS=--hostile`: one hostile client beside the well-behaved ones.

It runs in a process of its own (its event loop then adds no delay to the well-behaved
clients' calls, which are the ones measured) and does the three things issue 10 reproduced:

* unread streams: `streams` StreamPosts without a deadline, whose messages it never reads;
  each is opened again as soon as it ends. A client that reads nothing never sees the end the
  server gives it (the status waits behind the unread messages), so the hostile client also
  cancels and re-opens a stream after `renew` seconds, just past the default
  STREAM_IDLE_TIMEOUT_SECONDS: the pressure lasts for the whole soak;
* a login flood: `logins` concurrent AuthenticateUser with a wrong password;
* oversized pages: `pages` workers asking in turn for ListPosts and ListUsers pages of 1000
  and GetUser WITH_POSTS.

A call refused RESOURCE_EXHAUSTED is sent again after `backoff` seconds: the client stays
bounded in concurrency rather than becoming a flood of requests per second (which a rate limit
in front of the service answers, not these limits). Streams still open when the soak ends are
cancelled and counted as "open at end", those it re-opened as "renewed".
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

import blog.v1.resources_pb2 as res_pb
import grpc

from bench import pyclient, scenarios
from bench.model import Call
from bench.seed import Dataset
from bench.tally import Tally, ms, repeat

WRONG_PASSWORD = "not-the-password"
OPEN_AT_END = "open at end"
RENEWED = "renewed"


@dataclass(frozen=True)
class Hostile:
    """How hard the hostile client pushes."""

    streams: int = 20
    logins: int = 200
    pages: int = 8
    backoff: float = 1.0
    renew: float = 35.0


def ready() -> None:
    """Nothing: submitted first, so that the worker process has imported this module."""


async def _unread_streams(
    channel: grpc.aio.Channel, call: Call, end: float, tally: Tally, hostile: Hostile
) -> None:
    stub = channel.unary_stream(call.method, None, None)
    name = call.name + " unread"
    while (left := end - time.monotonic()) > 0:
        began = time.perf_counter_ns()
        stream = stub(call.payload)  # no deadline, like the attack in issue 10
        try:
            # A status is received without reading a message, if the server can send it.
            code = await asyncio.wait_for(stream.code(), min(left, hostile.renew))
        except TimeoutError:
            stream.cancel()
            renewed = hostile.renew < left
            tally.count(name, time.perf_counter_ns() - began, RENEWED if renewed else OPEN_AT_END)
            continue
        nanos = time.perf_counter_ns() - began
        if code is grpc.StatusCode.OK:
            tally.count(name, nanos, "OK")
            continue
        reason = pyclient.reason(await stream.trailing_metadata())
        label = f"{pyclient.code_name(code)} {reason}".strip()
        tally.count(name, nanos, label, (await stream.details() or "")[:200])
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            await asyncio.sleep(hostile.backoff)


async def attack(target: str, end: float, data: Dataset, hostile: Hostile) -> Tally:
    """Runs the hostile client against `target` until `end` (time.monotonic())."""
    streams, logins, pages = pyclient.channels(target, 3)  # one connection for each
    tally = Tally(reasons=True)
    stream = scenarios.stream_posts()[0]
    wrong = scenarios.authenticate(data, 64, password=WRONG_PASSWORD)
    (posts,), (users,) = scenarios.list_posts(page_size=1000), scenarios.list_users(page_size=1000)
    with_posts = scenarios.get_user(data, 64, view=res_pb.USER_VIEW_WITH_POSTS)
    big = tuple(c for user in with_posts for c in (posts, users, user))  # the three in turn

    def rotated(calls: tuple[Call, ...], index: int) -> itertools.islice[Call]:
        return itertools.islice(itertools.cycle(calls), index * 7 % len(calls), None)

    backoff = hostile.backoff
    await asyncio.gather(
        *(_unread_streams(streams, stream, end, tally, hostile) for _ in range(hostile.streams)),
        *(
            repeat(logins, rotated(wrong, i), end, tally, suffix=" wrong password", backoff=backoff)
            for i in range(hostile.logins)
        ),
        *(
            repeat(pages, rotated(big, i), end, tally, suffix=" oversized", backoff=backoff)
            for i in range(hostile.pages)
        ),
    )
    for channel in (streams, logins, pages):
        await channel.close(None)
    return tally


def run(target: str, end: float, data: Dataset, hostile: Hostile) -> Tally:
    """`attack` on an event loop of its own (the entry point of the hostile process)."""
    import uvloop

    return uvloop.run(attack(target, end, data, hostile))


def report(tally: Tally) -> None:
    """What happened to the hostile client's calls (its RESOURCE_EXHAUSTED are expected)."""
    print(f"hostile client: {tally.total()} calls (outcomes expected to include refusals)")
    print(f"{'what':<34}{'calls':>8}{'p50 ms':>10}{'max ms':>10}  outcomes")
    for name, codes in sorted(tally.codes.items()):
        lat = tally.latencies[name]
        outcomes = ", ".join(f"{code} {n}" for code, n in codes.most_common())
        print(
            f"{name:<34}{sum(codes.values()):>8}{ms(lat, 0.5):>10.1f}{ms(lat, 1.0):>10.1f}  {outcomes}"
        )
