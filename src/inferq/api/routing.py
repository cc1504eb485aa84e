"""inferq's routers: FastAPI's, told where their paths start, so a request skips the
routers that cannot serve it.

FastAPI (its versions that keep included routers as such) matches a request against an
included router by trying each of that router's routes in turn, and again at every level
of inclusion on the way down; a request for OpenAI's chat completions tried some forty
routes of other dialects (health, Together, the node protocol, Anthropic), each a few
microseconds of FastAPI's bookkeeping and a regular expression. A :class:`Router` whose
:attr:`~Router.path_starts` are known (:func:`install_path_starts`, once the app has
included its routers) answers "no match" at once for a path that starts with none of
them: every route's pattern begins with its path's literal text up to its first
parameter, so no route of that router could have matched, FULL or PARTIAL, and the
answer is the one FastAPI's walk would have reached. A path that starts with one of them
is matched by FastAPI as before, and so is every path once a route is added anywhere
after the starts were set.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from fastapi import APIRouter
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

#: the literal beginnings of a router's paths; None: not known
Starts = tuple[str, ...] | None


class Router(APIRouter):
    """An :class:`~fastapi.APIRouter` that skips a request whose path none of its routes
    can match, once its :attr:`path_starts` are known."""

    #: the literal beginnings of its routes' paths (as included in the app), or None:
    #: not known, every request is matched by FastAPI
    path_starts: tuple[str, ...] | None = None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        starts = self.path_starts
        if (
            starts is not None
            and scope["type"] == "http"
            and not get_route_path(scope).startswith(starts)
        ):
            return Match.NONE, {}
        match: tuple[Match, Scope] = super().matches(scope)
        return match

    def _mark_routes_changed(self) -> None:
        # FastAPI's hook for a route added or a router included: a path added after the
        # starts were set may be one no start covers, here or in a router above, so
        # every router forgets its starts (FastAPI matches everything again) until the
        # next install_path_starts
        super()._mark_routes_changed()
        for router in list(_GUARDED.values()):
            router.path_starts = None
        _GUARDED.clear()


#: the routers whose path starts are set, by id (a router is not hashable)
_GUARDED: weakref.WeakValueDictionary[int, Router] = weakref.WeakValueDictionary()


def literal_start(path: str) -> str:
    """``path`` up to its first parameter (all of it when it has none)."""
    brace = path.find("{")
    return path if brace < 0 else path[:brace]


def install_path_starts(routes: Iterable[BaseRoute]) -> None:
    """Set the :attr:`Router.path_starts` of every :class:`Router` included (at any depth)
    among ``routes`` (an app's). A router whose routes are not all plain routes and
    included routers, or that is included at two different prefixes, keeps None."""
    found: dict[int, tuple[Router, Starts]] = {}
    _starts_of(routes, "", found)
    for router, starts in found.values():
        router.path_starts = starts
        if starts is not None:
            _GUARDED[id(router)] = router


def _starts_of(
    routes: Iterable[BaseRoute],
    prefix: str,
    found: dict[int, tuple[Router, Starts]],
) -> tuple[str, ...] | None:
    """The path starts of ``routes`` included at ``prefix`` (None: not known); the routers
    met on the way are noted in ``found`` with theirs."""
    starts: set[str] | None = set()
    for route in routes:
        included = _included(route)
        if included is not None:
            router, include_prefix = included
            child = _starts_of(router.routes, prefix + include_prefix, found)
            if isinstance(router, Router):
                key = id(router)
                if key in found and found[key][1] != child:
                    child = None  # included twice, at different prefixes
                found[key] = (router, child)
            if child is None or starts is None:
                starts = None
            else:
                starts.update(child)
        elif isinstance(route, Route) and starts is not None:  # an APIRoute is one too
            starts.add(literal_start(prefix + route.path))
        else:  # a mount, a websocket, a host: not known here
            starts = None
    return None if starts is None else tuple(sorted(starts))


def _included(route: BaseRoute) -> tuple[APIRouter, str] | None:
    """The router that ``route`` includes and the prefix it is included at, when it is an
    included router (as FastAPI keeps them); None otherwise."""
    router = getattr(route, "original_router", None)
    prefix = getattr(getattr(route, "include_context", None), "prefix", None)
    if isinstance(router, APIRouter) and isinstance(prefix, str):
        return router, prefix
    return None
