"""Routers told where their paths start (inferq.api.routing): a request skips the routers
that cannot serve it, and every request is matched as FastAPI alone matches it."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.routing import Match, Mount

from inferq.api.app import create_app
from inferq.api.routing import Router, install_path_starts, literal_start
from inferq.config import Settings


def _app(tmp_path: Path) -> FastAPI:
    models = tmp_path / "models.toml"
    models.write_text('[models.fake]\nengine = "fake"\ncontext_length = 512\nslots = 1\n')
    return create_app(Settings(data_dir=tmp_path / "data", models_file=models))


def _routers() -> list[Router]:
    return [o for o in gc.get_objects() if isinstance(o, Router)]


def _matches(app: FastAPI, method: str, path: str, root_path: str = "") -> list[Match]:
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path}
    return [route.matches(dict(scope))[0] for route in app.router.routes]


def _probes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """Every route's path (its parameters filled in), with and without a trailing slash and
    with other methods, and paths no route has."""
    paths = {"/", "/nothing", "/v1", "/v1/", "/v1/nothing", "/node", "/worker", "/console/x/y"}
    for route in app.routes:
        path = getattr(route, "path", None)
        if path:
            paths.add(path)
    for router in _routers():
        for route in router.routes:
            path = getattr(route, "path", None)
            if path:
                paths.add(path)
                paths.add("/v1" + path)
    for path in list(paths):
        filled = re.sub(r"\{[^}]*\}", "x", path)
        paths.update({filled, filled + "/", filled.rstrip("/") or "/", filled + "/more"})
    for path in sorted(paths):
        for method in ("GET", "POST", "DELETE", "PUT", "PATCH"):
            yield method, path


def test_every_request_is_matched_as_fastapi_matches_it(tmp_path: Path) -> None:
    app = _app(tmp_path)
    routers = _routers()
    starts = {id(r): r.path_starts for r in routers}
    assert any(s is not None for s in starts.values())
    probes = list(_probes(app))
    guarded = [_matches(app, m, p) for m, p in probes]
    try:
        for router in routers:
            router.path_starts = None
        plain = [_matches(app, m, p) for m, p in probes]
    finally:
        for router in routers:
            router.path_starts = starts[id(router)]
    assert guarded == plain
    # and at least some requests were matched somewhere (the probes are real paths)
    assert any(Match.FULL in found for found in plain)


def test_a_root_path_is_taken_off_as_fastapi_does(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert Match.FULL in _matches(app, "POST", "/api/v1/queue/submit", root_path="/api")
    assert Match.FULL in _matches(app, "POST", "/v1/queue/submit", root_path="/api")


def test_a_router_skips_the_paths_none_of_its_routes_can_have(tmp_path: Path) -> None:
    from inferq.api.together.router import router as together

    _app(tmp_path)
    assert together.path_starts is not None
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "root_path": ""}
    assert together.matches(scope) == (Match.NONE, {})


def test_starts_follow_the_prefixes_of_inclusion() -> None:
    inner = Router()
    inner.add_api_route("/items/{item_id}", lambda item_id: None, methods=["GET"])
    outer = Router(prefix="/outer")
    outer.add_api_route("/plain", lambda: None)
    outer.include_router(inner, prefix="/v2")
    app = FastAPI()
    app.include_router(outer)
    install_path_starts(app.router.routes)
    # FastAPI puts the including router's prefix before the prefix of the inclusion
    assert inner.path_starts == ("/outer/v2/items/",)
    assert outer.path_starts == ("/outer/plain", "/outer/v2/items/")
    scope = {"type": "http", "method": "GET", "path": "/outer/v2/items/1", "root_path": ""}
    assert app.router.routes[-1].matches(scope)[0] is Match.FULL


def test_a_router_with_other_routes_or_two_prefixes_is_not_guarded() -> None:
    mounted = Router()
    mounted.routes.append(Mount("/static", app=FastAPI()))
    twice = Router()
    twice.add_api_route("/x", lambda: None)
    app = FastAPI()
    app.include_router(mounted)
    app.include_router(twice, prefix="/a")
    app.include_router(twice, prefix="/b")
    install_path_starts(app.router.routes)
    assert mounted.path_starts is None
    assert twice.path_starts is None


@pytest.mark.parametrize(
    ("path", "start"),
    [("/healthz", "/healthz"), ("/v1/files/{file_id}", "/v1/files/"), ("/{rest:path}", "/")],
)
def test_literal_start(path: str, start: str) -> None:
    assert literal_start(path) == start


def test_a_route_added_later_turns_the_starts_off() -> None:
    inner = Router()
    inner.add_api_route("/a", lambda: None)
    outer = Router()
    outer.include_router(inner)
    app = FastAPI()
    app.include_router(outer)
    install_path_starts(app.router.routes)
    assert outer.path_starts == ("/a",)
    inner.add_api_route("/b", lambda: None)
    assert outer.path_starts is None and inner.path_starts is None
    scope = {"type": "http", "method": "GET", "path": "/b", "root_path": ""}
    assert app.router.routes[-1].matches(scope)[0] is Match.FULL
