"""Walking a List call page after page, as a client does, with the token each page returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def every_page(ask: Callable[[int, str], Awaitable[Any]], most: int = 1000) -> list[Any]:
    """The pages of a List call in order: `ask(number, page_token)` fetches page `number` (from 0)
    with the token of the page before ("" first), until a page has no next_page_token. More than
    `most` pages fails the test: a token that never ends."""
    pages: list[Any] = []
    token = ""
    while len(pages) < most:
        page = await ask(len(pages), token)
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages
    raise AssertionError(f"still a next_page_token after {most} pages")
