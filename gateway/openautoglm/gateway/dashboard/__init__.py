"""The web dashboard, served by the gateway's HTTP port beside the JSON API (http_api.py).

Everything the page shows comes from the public JSON API (/v1/...) with the user's key, which
the page keeps in sessionStorage and sends as `Authorization: Bearer`: it is never in a URL, a
cookie or this server's pages. The files are static, shipped in the package (static/), the chart
library vendored from npm (scripts/vendor_dashboard.py): nothing loads from a CDN. Two routes here
are not the contract's:

- /dashboard/config.json: where the study's trace opens in Jaeger (--jaeger-url), and the demo
  spec the create form starts from;
- POST /dashboard/spec: a YAML spec (the CLI's format) -> its StudySpec in protobuf JSON for
  CreateStudy, or the first error with its field and line; plus the line of every field, so an
  error CreateStudy returns ("spec.budget.max_trials: ...") shows at its line too.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web
from google.protobuf import json_format

from openautoglm.common.catalogue import DEMO_SPEC
from openautoglm.common.spec.files import field_lines, spec_from_text
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import SpecError

STATIC_DIR = Path(__file__).parent / "static"
# A spec typed into a page: generous for any real spec, small enough to parse at once.
MAX_SPEC_BYTES = 256 * 1024
# The pages' policy: their own scripts and API only (inline styles: the charts' tooltips set
# them); no framing (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@web.middleware
async def _security_headers(request: web.Request, handler):
    response = await handler(request)
    if request.path == "/" or request.path.startswith("/dashboard"):
        response.headers.update(SECURITY_HEADERS)
    return response


def add_dashboard(app: web.Application, jaeger_url: str, read_roots: Sequence[Path],
                  can_create: Callable[[str], bool]) -> None:
    """Serve the dashboard on `app`. `can_create(secret)`: whether a key may create studies (the
    spec route parses only for such keys, with the server's own read roots)."""
    app.middlewares.append(_security_headers)
    example_spec = DEMO_SPEC.read_text(encoding="utf-8")

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def config(request: web.Request) -> web.Response:
        return web.json_response({"jaegerUrl": jaeger_url.rstrip("/"), "exampleSpec": example_spec})

    async def spec(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not can_create(header[len("Bearer "):].strip()):
            return _error(401, "UNAUTHENTICATED", "authorization: a member key is needed to check a spec")
        if request.content_length is not None and request.content_length > MAX_SPEC_BYTES:
            return _error(413, "RESOURCE_EXHAUSTED", f"spec: over {MAX_SPEC_BYTES // 1024} KiB")
        body = await request.content.read(MAX_SPEC_BYTES + 1)
        if len(body) > MAX_SPEC_BYTES:
            return _error(413, "RESOURCE_EXHAUSTED", f"spec: over {MAX_SPEC_BYTES // 1024} KiB")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "INVALID_ARGUMENT", "spec: not UTF-8 text")
        lines = field_lines(text)
        try:
            model = spec_from_text(text, read_roots=read_roots, allow_aliases=False)
        except SpecError as err:
            return web.json_response({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": err.message,
                                                "field": err.field, "line": err.line}, "lines": lines}, status=400)
        return web.json_response({"spec": json_format.MessageToDict(spec_to_proto(model)), "lines": lines})

    async def to_index(request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard/")

    app.router.add_get("/", to_index)
    app.router.add_get("/dashboard", to_index)
    app.router.add_get("/dashboard/", index)
    app.router.add_get("/dashboard/config.json", config)
    app.router.add_post("/dashboard/spec", spec)
    app.router.add_static("/dashboard/static/", STATIC_DIR, follow_symlinks=False, append_version=False)


def _error(status: int, name: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "status": name, "message": message}}, status=status)
