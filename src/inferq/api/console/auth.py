"""Who is asking: the console's session dependency and the checks of its POST forms."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from inferq.api.console.session import (
    COOKIE,
    CSRF_FIELD,
    Forbidden,
    KeyCache,
    NotLoggedIn,
    Sessions,
    Viewer,
)
from inferq.api.deps import Services, ServicesDep
from inferq.config import Settings
from inferq.core.errors import InvalidRequest
from inferq.core.inputs import check_text
from inferq.core.models import ApiKey
from inferq.core.states import JobState
from inferq.core.throughput import Series


@dataclass(eq=False)
class ConsoleState:
    """What the console keeps per app: its sessions, the keys by id, and the last
    throughput read per tenant (the plot is refreshed by every open page)."""

    sessions: Sessions
    keys: KeyCache
    #: how long a throughput read is reused (seconds)
    throughput_seconds: float = 5.0
    _throughput: dict[str | None, tuple[float, Series]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleState:
        return cls(
            sessions=Sessions(
                secret=settings.signing_secret, lifetime=settings.console_session_hours * 3600
            ),
            keys=KeyCache(seconds=settings.key_cache_seconds),
        )

    def cached_throughput(self, scope: str | None) -> Series | None:
        hit = self._throughput.get(scope)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def keep_throughput(self, scope: str | None, data: Series) -> None:
        self._throughput[scope] = (time.monotonic() + self.throughput_seconds, data)


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


async def key_by_id(state: ConsoleState, services: Services, key_id: str) -> ApiKey | None:
    if state.keys.stale() or state.keys.get(key_id) is None:
        state.keys.fill(await services.keys.list())
    return state.keys.get(key_id)


async def get_viewer(request: Request, services: ServicesDep) -> Viewer:
    """The logged-in key; :class:`NotLoggedIn` (the login page) without a live session."""
    state = console_state(request)
    session = state.sessions.verify(request.cookies.get(COOKIE))
    key = await key_by_id(state, services, session.key_id)
    if key is None or key.revoked_at is not None:
        raise NotLoggedIn
    viewer = Viewer(key=key, session=session, csrf=state.sessions.csrf(session))
    request.state.console_viewer = viewer  # for error pages
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def same_origin(request: Request) -> bool:
    """Whether the browser says the request comes from a page of this server (a browser
    that sends no ``Origin`` passes; the CSRF token still has to match)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def form_of(request: Request, viewer: Viewer) -> dict[str, str]:
    """The POSTed form's text fields, once its origin and CSRF token are checked."""
    form = await request.form()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    state = console_state(request)
    if not same_origin(request) or not state.sessions.check_csrf(
        viewer.session, fields.get(CSRF_FIELD)
    ):
        raise Forbidden()
    return fields


def filter_text(value: str | None, param: str) -> str | None:
    """A filter from a query string: None when empty, checked like any client text."""
    value = (value or "").strip()
    if not value:
        return None
    check_text(value, param=param, what="the filter")
    return value


@dataclass(frozen=True, slots=True)
class Filters:
    """A listing's state and tenant filters, checked: a tenant's key is held to its own
    tenant whatever it asks for."""

    #: the state asked for, or None for any
    states: frozenset[JobState] | None
    #: whose work to list: None is every tenant (an admin that named none)
    tenant: str | None
    #: what the form shows again
    shown: dict[str, str]


def listing_filters(viewer: Viewer, *, state: str | None, tenant: str | None) -> Filters:
    chosen = filter_text(state, "state")
    if chosen is not None and chosen not in {s.value for s in JobState}:
        raise InvalidRequest(f"state {chosen!r} is not a state", param="state")
    return Filters(
        states=frozenset({JobState(chosen)}) if chosen else None,
        tenant=filter_text(tenant, "tenant") if viewer.admin else viewer.scope,
        shown={"state": chosen or "", "tenant": (tenant or "") if viewer.admin else ""},
    )
