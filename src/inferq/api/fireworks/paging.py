"""Fireworks' list pages: ``pageSize`` (default 50, at most 200), opaque ``pageToken``s.

A token is the id of the last item of the previous page; the stores list newest
first and continue after an id. Filters the store cannot apply are applied here,
reading on until a page is full. A list endpoint takes a :data:`PageDep`, reads its
page with :func:`list_page` and answers with :meth:`Page.body`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Query

from inferq.core.errors import InvalidRequest


class Fetch(Protocol):
    """A store's listing, newest first: up to ``limit`` items after the item ``after``."""

    def __call__(self, *, limit: int, after: str | None) -> Awaitable[list[Any]]: ...


DEFAULT_PAGE, MAX_PAGE = 50, 200


@dataclass(frozen=True, slots=True)
class PageQuery:
    """A list request's paging parameters and filter, as sent (checked where used)."""

    size: int | None
    token: str | None
    filter: str | None


def _page_query(
    size: int | None = Query(None, alias="pageSize"),
    token: str | None = Query(None, alias="pageToken"),
    filter_: str | None = Query(None, alias="filter"),
) -> PageQuery:
    return PageQuery(size, token, filter_)


PageDep = Annotated[PageQuery, Depends(_page_query)]


def page_size(value: int | None) -> int:
    if value is None or value == 0:
        return DEFAULT_PAGE
    if value < 0:
        raise InvalidRequest("pageSize: must not be negative", param="pageSize")
    return min(value, MAX_PAGE)


def page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def page_after(token: str | None) -> str | None:
    """The id a page token continues after (None: the first page)."""
    if not token:
        return None
    try:
        after = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        after = ""
    if not after:
        raise InvalidRequest("pageToken: not a token this API returned", param="pageToken")
    return after


async def page_of(
    fetch: Fetch,
    keep: Callable[[Any], bool],
    size: int,
    after: str | None,
) -> tuple[list[Any], bool]:
    """Up to ``size`` items ``keep`` accepts, after the item ``after``; whether more follow."""
    found: list[Any] = []
    while len(found) <= size:
        chunk = await fetch(limit=200, after=after)
        found += [item for item in chunk if keep(item)]
        if len(chunk) < 200:
            break
        after = chunk[-1].id
    return found[:size], len(found) > size


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a list: its items, the token of the next page ("" after the last) and
    how many items there are in all."""

    items: list[Any]
    next_token: str
    total: int

    def body(self, name: str, rendered: list[dict[str, Any]]) -> dict[str, Any]:
        """The list's answer: the page's items as ``rendered``, under ``name``."""
        return {name: rendered, "nextPageToken": self.next_token, "totalSize": self.total}


async def list_page(
    fetch: Fetch, query: PageQuery, keep: Callable[[Any], bool] = lambda item: True
) -> Page:
    """The page ``query`` asks for, of the items ``keep`` accepts."""
    found, more = await page_of(fetch, keep, page_size(query.size), page_after(query.token))
    return Page(found, page_token(found[-1].id) if more else "", await count_of(fetch, keep))


async def count_of(fetch: Fetch, keep: Callable[[Any], bool]) -> int:
    total, after = 0, None
    while chunk := await fetch(limit=1000, after=after):
        total += sum(1 for item in chunk if keep(item))
        if len(chunk) < 1000:
            break
        after = chunk[-1].id
    return total
