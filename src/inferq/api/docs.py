"""The interactive API docs, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served whole
from this process: their scripts, styles and icon come from the ``fastapi-offline``
package (Swagger UI's bundle and ReDoc's standalone build) under ``/docs-static``, so the
pages work on a machine without internet access. FastAPI's own CDN-based pages are off.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: where the assets are served
STATIC = "/docs-static"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def install(app: FastAPI) -> None:
    """Serve the docs pages and their assets (create the app with ``docs_url=None`` and
    ``redoc_url=None``)."""
    assets = files("fastapi_offline").joinpath("static")
    app.mount(STATIC, StaticFiles(directory=str(assets)), name="docs-static")
    title = f"{app.title} API"

    def page(request: Request, render: Callable[..., HTMLResponse], **assets: str) -> HTMLResponse:
        """``render``'s page, its schema and ``assets`` under the proxy's root path."""
        root = request.scope.get("root_path", "")
        urls = {name: root + path for name, path in assets.items()}
        return render(openapi_url=root + (app.openapi_url or "/openapi.json"), title=title, **urls)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return page(
            request,
            get_swagger_ui_html,
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon.png",
            oauth2_redirect_url=OAUTH2_REDIRECT,
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        render = partial(get_redoc_html, with_google_fonts=False)
        return page(
            request,
            render,
            redoc_js_url=f"{STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC}/favicon.png",
        )
