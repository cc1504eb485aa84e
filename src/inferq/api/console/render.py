"""The console's HTML: templates, security headers, and errors as pages.

Templates (``templates/``) are rendered with Jinja2, autoescaped. A page asked for by
the console's own script (header ``X-Console-Live``) gets only its live part (the
template named with a leading ``_``), which the script swaps in. Every console route
uses :class:`ConsoleRoute`: an error becomes an HTML page with the error's status, and a
request without a session goes to the login page (or gets a 401, for the script).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferq.api.console.session import Forbidden, NotLoggedIn
from inferq.api.errors import status_of
from inferq.core.errors import ClientError, InferqError, public

log = logging.getLogger("inferq.console")

PREFIX = "/console"
LOGIN = PREFIX + "/login"
#: sent by console.js when it refreshes a live part of a page
LIVE_HEADER = "x-console-live"

#: what a console page may load: only its own files; no inline script, no framing
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def timestamp(value: float | None) -> str:
    if value is None:
        return "—"
    moment = dt.datetime.fromtimestamp(value, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: float | None) -> str:
    if value is None:
        return ""
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    """``1.2 s``, ``3 min 05 s``, ``2 h 04 min``; ``—`` for None."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def here(request: Request) -> str:
    """The path and query of this request (what a live part of its page reloads)."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("inferq.api.console", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(timestamp=timestamp, iso=iso, duration=duration, number=number)
    env.globals.update(prefix=PREFIX, here=here)
    return env


ENV = _environment()


def is_live(request: Request) -> bool:
    return request.headers.get(LIVE_HEADER) == "1"


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    live: str | None = None,
) -> HTMLResponse:
    """Render ``template`` (or only ``live``, its live part, for the console's script)."""
    name = live if live is not None and is_live(request) else template
    html = ENV.get_template(name).render(request=request, **context)
    return secure(HTMLResponse(html, status_code=status_code))  # type: ignore[return-value]


def render_error(exc: InferqError, status_code: int) -> Response:
    """An error answered before a console route runs (a NUL in the path, a body over the
    limit, a path no route matches) as the console's error page, without the viewer's
    navigation (the session is not read)."""
    context = {"viewer": None, "status": status_code, "message": exc.message, "nav": None}
    html = ENV.get_template("error.html").render(**context)
    return secure(HTMLResponse(html, status_code=status_code))


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    viewer = getattr(request.state, "console_viewer", None)
    context = {"viewer": viewer, "status": status_code, "message": message, "nav": None}
    return page(request, "error.html", context, status_code=status_code)


def to_login(request: Request) -> Response:
    """Where a request without a session goes: the login page, back here afterwards."""
    if is_live(request) or request.method != "GET":
        return secure(HTMLResponse("not logged in", status_code=401))
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return secure(RedirectResponse(f"{LOGIN}?next={quote(target)}", status_code=303))


class ConsoleRoute(APIRoute):
    """A console route: its errors are HTML pages, never a dialect's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except NotLoggedIn:
                return to_login(request)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
                return error_page(request, 400, f"{where}: {first.get('msg', 'invalid')}")
            except InferqError as exc:
                if not isinstance(exc, ClientError):
                    log.warning("%s %s failed: %s", request.method, request.url.path, exc)
                shown = public(exc)
                return error_page(request, status_of(shown, {Forbidden: 403}), shown.message)
            except StarletteHTTPException as exc:  # a malformed form, for one
                return error_page(request, exc.status_code, str(exc.detail))
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return error_page(request, 500, "internal error; see the server log")

        return console_handler
