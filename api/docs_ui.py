"""The API's documentation pages (/docs, Swagger UI; /redoc, ReDoc) with their scripts, styles
and icon served by the API itself, so the pages work where no CDN can be reached.

FastAPI's own pages load Swagger UI and ReDoc from a CDN; these are FastAPI's documented
self-hosting pattern (its page builders, pointed at local assets), with the assets taken from
the ``fastapi-offline`` package, which ships Swagger UI's and ReDoc's release bundles.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
ASSETS_DIRECTORY = files("fastapi_offline") / "static"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def serve_docs_offline(
    application: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc"
) -> None:
    """Serve /docs and /redoc from local assets; ``application`` is built with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not."""
    openapi_url = application.openapi_url or "/openapi.json"
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"
    application.mount(ASSETS_PATH, StaticFiles(directory=str(ASSETS_DIRECTORY)), name="docs-assets")

    @application.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{application.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{ASSETS_PATH}/{SWAGGER_JS}",
            swagger_css_url=f"{ASSETS_PATH}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{ASSETS_PATH}/{FAVICON}",
            swagger_ui_parameters=application.swagger_ui_parameters,
        )

    @application.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @application.get(redoc_url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{application.title} - ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/{REDOC_JS}",
            redoc_favicon_url=f"{ASSETS_PATH}/{FAVICON}",
            # ReDoc's default pulls fonts from Google's CDN; the bundle falls back to local ones.
            with_google_fonts=False,
        )
