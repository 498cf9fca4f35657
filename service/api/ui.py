"""The web page: ``GET /`` serves the single-page UI and ``GET /static/{name}`` its assets, from ``service/static/``.

Plain files with no build step, so the page works on a machine with no internet access.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Explicit types rather than the mimetypes registry, whose answers depend on the host's /etc/mime.types.
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


router = APIRouter(include_in_schema=False)


def _asset_response(name: str) -> FileResponse:
    path = STATIC_DIR / name
    media_type = _MEDIA_TYPES.get(path.suffix)
    # The route's path parameter cannot contain "/", so a file directly inside STATIC_DIR is all it can name.
    if media_type is None or name.startswith(".") or not path.is_file():
        raise HTTPException(status_code=404, detail="No such file.")
    # no-cache: browsers revalidate with the ETag, so a new release is picked up without stale scripts.
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> FileResponse:
    """The web page: upload or draw a digit and see each model's prediction."""
    return _asset_response("index.html")


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def static_asset(name: str) -> FileResponse:
    """A stylesheet, script or icon of the web page."""
    return _asset_response(name)
