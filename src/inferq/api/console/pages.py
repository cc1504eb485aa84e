"""The console's login, queues, throughput and jobs pages."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Query, Request, Response
from fastapi.responses import RedirectResponse

from inferq.api.console.auth import (
    ViewerDep,
    console_state,
    filter_text,
    form_of,
    listing_filters,
    same_origin,
)
from inferq.api.console.render import LOGIN, PREFIX, ConsoleRoute, page, secure
from inferq.api.console.session import COOKIE
from inferq.api.console.views import job_view, queue_rows, throughput_charts
from inferq.api.deps import ServicesDep
from inferq.api.routing import Router
from inferq.core.errors import AuthenticationFailed
from inferq.core.models import JobFilter
from inferq.core.states import JobState

router = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

#: the throughput plot: the last hour, a point a minute
SPAN, BUCKET = 3600.0, 60.0
#: the most jobs one listing shows
MAX_LISTED = 500


def _next_page(target: str | None) -> str:
    """Where to go after logging in: a console page only (never another site)."""
    local = target is not None and target.startswith(PREFIX + "/") and "\\" not in target
    if local and LOGIN not in str(target):
        return str(target)
    return PREFIX + "/queues"


@router.get("")
@router.get("/")
async def home(viewer: ViewerDep) -> Response:
    return secure(RedirectResponse(PREFIX + "/queues", status_code=303))


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", {"viewer": None, "nav": None, "next": _next_page(next)})


@router.post("/login")
async def login(request: Request, services: ServicesDep) -> Response:
    form = await request.form()
    secret = form.get("key")
    target = _next_page(str(form.get("next") or ""))
    context = {"viewer": None, "nav": None, "next": target}
    if not same_origin(request):
        error = "Log in from this site."
        return page(request, "login.html", {**context, "error": error}, status_code=403)
    try:
        key = await services.keys.authenticate(secret if isinstance(secret, str) else None)
    except AuthenticationFailed:
        error = "That API key was not accepted."
        return page(request, "login.html", {**context, "error": error}, status_code=401)
    cookie, session = console_state(request).sessions.issue(key)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(session.expires_at - console_state(request).sessions.clock()),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_https(request, services.settings.public_url),
    )
    return secure(response)


def _https(request: Request, public_url: str) -> bool:
    return request.url.scheme == "https" or public_url.startswith("https://")


@router.post("/logout")
async def logout(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    await form_of(request, viewer)
    console_state(request).sessions.end(viewer.session)
    response = RedirectResponse(LOGIN + "?out=1", status_code=303)
    response.delete_cookie(
        COOKIE,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_https(request, services.settings.public_url),
    )
    return secure(response)


@router.get("/queues")
async def queues(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    counts = await services.jobs.active(tenant=viewer.scope)
    rows = queue_rows(counts, services.registry.names())
    context = {"viewer": viewer, "nav": "queues", "rows": rows}
    return page(request, "queues.html", context, live="_queues.html")


@router.get("/throughput")
async def throughput(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    state = console_state(request)
    data = state.cached_throughput(viewer.scope)
    if data is None:
        data = await services.jobs.throughput(tenant=viewer.scope, span=SPAN, bucket=BUCKET)
        state.keep_throughput(viewer.scope, data)
    context = {
        "viewer": viewer,
        "nav": "throughput",
        "series": data,
        "charts": throughput_charts(data),
    }
    return page(request, "throughput.html", context, live="_throughput.html")


@router.get("/jobs")
async def jobs(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    model: str | None = None,
    state: str | None = None,
    tenant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
) -> Response:
    asked = listing_filters(viewer, state=state, tenant=tenant)
    flt = JobFilter(
        tenant=asked.tenant,
        model=filter_text(model, "model"),
        states=asked.states,
        limit=limit,
    )
    now = services.jobs.clock()
    found = [job_view(job, now) for job in await services.jobs.list(flt)]
    context = {
        "viewer": viewer,
        "nav": "jobs",
        "jobs": found,
        "filters": {**asked.shown, "model": flt.model or ""},
        "limit": limit,
        "models": sorted(services.registry.names()),
        "states": [s.value for s in JobState],
    }
    return page(request, "jobs.html", context, live="_jobs.html")


@router.get("/jobs/{job_id}")
async def job_detail(
    request: Request, job_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    job = await services.jobs.get(job_id, tenant=viewer.scope)
    context = {"viewer": viewer, "nav": "jobs", "view": job_view(job, services.jobs.clock())}
    return page(request, "job.html", context, live="_job.html")


@router.post("/jobs/{job_id}/cancel")
async def job_cancel(
    request: Request, job_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    await form_of(request, viewer)
    job = await services.jobs.cancel(job_id, tenant=viewer.scope)
    return secure(RedirectResponse(f"{PREFIX}/jobs/{quote(job.id, safe='')}", status_code=303))
