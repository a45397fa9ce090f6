"""Serves the admin page shell and its static files (no token needed: every data call needs one).

Plain HTML, CSS and JavaScript shipped inside the package: no build step, no CDN, no tile server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}  # fmt: skip
# The shell is small and changes with the code: always revalidate rather than serve a stale copy.
NO_STALE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["admin"], include_in_schema=False)


@router.get("/admin")
def admin_page() -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type=MEDIA_TYPES[".html"], headers=NO_STALE)


@router.get("/admin/")
def admin_page_slash() -> Response:
    return RedirectResponse("/admin", status_code=308)


@router.get("/admin/static/{name}")
def static_file(name: str) -> Response:
    path = STATIC_DIR / name
    # Only the files shipped in the folder itself: no subfolders, no "..".
    if path.parent != STATIC_DIR or path.suffix not in MEDIA_TYPES or not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=NO_STALE)
