"""The web console at ``/console``: server-rendered pages over the same services as the
API, with a little script of its own for live updates (no external assets, no build).

A browser logs in with an API key and gets a session cookie (:mod:`.session`); a
tenant's key sees its tenant's work, an admin key every tenant's. Its pages: queues,
jobs (with cancel), batches and workflow jobs (progress, cancel, downloads), the
throughput of the last hour, webhook deliveries, and for admins the keys and the
nodes.

The console is a dialect of its own (:data:`DIALECT`) for what its errors look like:
what the app refuses before a console route runs (a NUL in the path, a body over the
limit, a path that matches no route) is an HTML error page too, never JSON.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from inferq.api.console import admin, batches, pages, webhooks
from inferq.api.console.auth import ConsoleState
from inferq.api.console.render import PREFIX, ConsoleRoute, render_error
from inferq.api.console.session import Forbidden
from inferq.api.dialect import Dialect
from inferq.api.routing import Router
from inferq.config import Settings
from inferq.core.errors import NotFound

STATIC = PREFIX + "/static"


def install(app: FastAPI, settings: Settings) -> None:
    """The console's state and its static files (mounted before its pages, which come
    with :data:`DIALECT`)."""
    app.state.console = ConsoleState.from_settings(settings)
    assets = files("inferq.api.console").joinpath("static")
    app.mount(STATIC, StaticFiles(directory=str(assets)), name="console-static")


#: last: every other path under the prefix
_unknown = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@_unknown.api_route("/{rest:path}", methods=["GET", "POST"])
async def unknown_page(rest: str) -> None:
    raise NotFound(f"the console has no page {PREFIX}/{rest}")


#: its pages (a path under ``/console`` that none of them claims is the console's 404 page)
router = Router()
for _pages in (pages.router, batches.router, webhooks.router, admin.router, _unknown):
    router.include_router(_pages)

DIALECT = Dialect(
    name="console",
    router=router,
    prefixes=(PREFIX,),
    render_error=render_error,
    statuses={Forbidden: 403},
)
