"""The UI router serves the page and its assets with the right content types, and nothing outside its folder."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI

from service.api.ui import STATIC_DIR, router

if TYPE_CHECKING:
    # Only the annotation: the suite's conftest imports TestClient under its warning filter.
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.anyio

EXPECTED_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "number.js": "text/javascript; charset=utf-8",
    "camera.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Paths the asset route matches answer with its own detail; the rest never reach it.
OWN_404 = "No such file."
ROUTING_404 = "Not Found"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def router_client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui.test") as test_client:
        yield test_client


async def test_index_is_html_that_loads_the_assets(router_client: httpx.AsyncClient) -> None:
    response = await router_client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    referenced = set(re.findall(r'(?:src|href)="static/([^"]+)"', response.text))
    assert referenced == set(EXPECTED_TYPES)


@pytest.mark.parametrize(("name", "content_type"), sorted(EXPECTED_TYPES.items()))
async def test_asset_is_served_with_its_content_type(
    router_client: httpx.AsyncClient, name: str, content_type: str
) -> None:
    response = await router_client.get(f"/static/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (STATIC_DIR / name).read_bytes()
    assert "etag" in response.headers


def test_the_service_app_serves_the_page(client: TestClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.content == (STATIC_DIR / "index.html").read_bytes()


def test_every_file_in_the_static_folder_is_referenced() -> None:
    assert {path.name for path in STATIC_DIR.iterdir()} == {"index.html", *EXPECTED_TYPES}


async def test_head_request_answers_without_body(router_client: httpx.AsyncClient) -> None:
    response = await router_client.head("/static/app.js")

    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == (STATIC_DIR / "app.js").stat().st_size


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/static/missing.js", OWN_404),
        ("/static/index.htm", OWN_404),
        ("/static/.hidden.css", OWN_404),
        ("/static/%2E%2E", OWN_404),
        ("/static/..%2Fapi%2Fui.py", ROUTING_404),
        ("/static/../api/ui.py", ROUTING_404),
    ],
)
async def test_anything_else_is_not_found(router_client: httpx.AsyncClient, path: str, detail: str) -> None:
    response = await router_client.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": detail}
