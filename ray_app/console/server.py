"""The web console's files, served by the API itself at `/` (DESIGN §10): nothing else to start.

The console is plain ES modules (static/*.js) with one vendored library (uPlot, static/vendor/),
loaded from this origin only: no CDN, no build step. Every answer here carries a
Content-Security-Policy that allows scripts and styles from this origin alone (no inline script,
no eval), images from this origin, from `blob:` (a picture the user drops to try the model) and
from the S3 endpoint users reach (artifact plots are presigned URLs there), and connections to
this origin and that endpoint (dataset uploads go straight to S3). The page itself holds no
secret: it asks for an API token and keeps it in the tab's session storage.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse

from ray_app.config import Settings

STATIC = Path(__file__).with_name("static")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


def s3_origin(settings: Settings) -> str | None:
    """The scheme://host[:port] of the S3 endpoint in presigned URLs, or None (AWS: any bucket
    host, allowed as https://*.amazonaws.com)."""
    endpoint = settings.s3_public_endpoint or settings.s3_endpoint
    if not endpoint:
        return "https://*.amazonaws.com" if settings.storage_type == "s3" else None
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def security_headers(settings: Settings) -> dict[str, str]:
    s3 = s3_origin(settings)
    extra = f" {s3}" if s3 else ""
    policy = "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src 'self' blob:{extra}",
        f"connect-src 'self'{extra}",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache"}


def _file(request: Request, path: Path) -> FileResponse:
    headers = security_headers(request.app.state.ctx.settings)
    return FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"), headers=headers)


@router.get("/")
async def index(request: Request) -> FileResponse:
    return _file(request, STATIC / "index.html")


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/console/{name:path}")
async def asset(name: str, request: Request) -> FileResponse:
    path = (STATIC / name).resolve()
    # only files inside static/ of a known type: no path escapes, no directory listings
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in TYPES:
        raise HTTPException(404, detail=f"no console file {name!r}")
    return _file(request, path)
