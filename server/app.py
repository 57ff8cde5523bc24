"""The ASGI app of ``registry serve`` (Starlette): routes, token check, upload limits, metrics.

Images arrive as bytes only (a multipart upload or a raw ``image/*`` body); the server never
opens a path a client names. Every error is answered with one line of JSON, ``{"error": ...}``,
and never with a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from registry.errors import RegistryError
from server.feedback import FeedbackWorker, save_upload
from server.metrics import ServeMetrics
from server.render import overlay_png_base64
from server.scoring import Scored, ScoringWorker, ServeError
from server.settings import ServeSettings
from structcore.image_files import ImageReadError
from structcore.preprocess import decode_image

log = logging.getLogger("structcore.serve")

#: Paths answered without the bearer token: the page itself (it asks for the token) and liveness.
OPEN_PATHS = frozenset({"/", "/healthz", "/favicon.ico"})
#: Raw (non-multipart) bodies accepted as one image.
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
_UNSAFE_NAME = re.compile(r"[^\w.\-+ ()\[\]]")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _route_label(path: str) -> str:
    """The route template of ``path`` (keeps the metric labels few)."""
    if path.startswith("/v1/categories/"):
        return "/v1/categories/{name}/good" if path.endswith("/good") else "/v1/categories/{name}"
    if path in {"/", "/healthz", "/readyz", "/metrics", "/v1/infer", "/v1/categories"}:
        return path
    return "other"


def _upload_name(raw: str | None, index: int) -> str:
    """A label for an uploaded image: the client's file name reduced to a safe base name."""
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME.sub("_", base)[:120]
    return base or f"image-{index}"


def _status_of(error: ImageReadError) -> int:
    """415 for bytes that are no image, 413 for too many pixels, 400 for a damaged image."""
    if error.reason.startswith("not a readable image"):
        return 415
    if error.reason.startswith("image too large"):
        return 413
    return 400


class _Guard(BaseHTTPMiddleware):
    """Bearer token check and request metrics (status and latency by route)."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: ServeMetrics):
        super().__init__(app)
        self.token = settings.token
        self.metrics = metrics

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        route = _route_label(request.url.path)
        if self.token and request.url.path not in OPEN_PATHS and not self._authorised(request):
            response: Response = _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        else:
            try:
                response = await call_next(request)
            except Exception:  # pragma: no cover - the exception handlers answer first
                log.exception("unhandled error")
                response = _error(500, "internal server error; see the server log")
        self.metrics.requests.labels(route=route, method=request.method, status=str(response.status_code)).inc()
        self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
        return response

    def _authorised(self, request: Request) -> bool:
        assert self.token is not None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())


def create_app(
    settings: ServeSettings, worker: ScoringWorker | None = None, feedback: FeedbackWorker | None = None
) -> Starlette:
    """The app serving the registry at ``settings.root`` (the workers start with the app's lifespan)."""
    settings = settings.check()
    metrics = worker.metrics if worker is not None else ServeMetrics()
    scoring = worker or ScoringWorker(settings, metrics)
    updates = feedback or FeedbackWorker(settings.root)
    page = files("server").joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(scoring.start)
        updates.start()
        log.info("serving %s", settings.root)
        try:
            yield
        finally:
            await run_in_threadpool(updates.stop)
            await run_in_threadpool(scoring.stop)

    async def index(_request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        if scoring.ready:
            return JSONResponse({"ready": True, "categories": len(scoring.catalogue.current)})
        reason = "the registry has no categories" if scoring.loaded else "still loading"
        return JSONResponse({"ready": False, "error": reason}, status_code=503)

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    async def categories(_request: Request) -> Response:
        catalogue = scoring.catalogue
        return JSONResponse({"categories": [_summary(c) for c in catalogue.categories]})

    async def category(request: Request) -> Response:
        name = request.path_params["name"]
        found = next((c for c in scoring.catalogue.categories if c["name"] == name), None)
        if found is None:
            raise ServeError(404, f"unknown category {name!r}; see GET /v1/categories")
        return JSONResponse(found)

    async def read_uploads(request: Request) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
        body = await _read_body(request, settings.max_upload_bytes)
        content_type = request.headers.get("content-type", "")
        fields: dict[str, str] = {}
        if content_type.startswith("multipart/form-data"):
            uploads, fields = await _parse_multipart(request, body, settings.max_images_per_request)
        elif content_type.startswith(RAW_IMAGE_TYPES):
            uploads = [("image-0", body)]
        else:
            raise ServeError(415, "send images as multipart/form-data (field 'image') or one raw image/* body")
        if not uploads:
            raise ServeError(400, "no image in the request; upload one or more files (multipart field 'image')")
        return uploads, fields

    async def good(request: Request) -> Response:
        name = request.path_params["name"]
        if not any(c["name"] == name for c in scoring.catalogue.categories):
            raise ServeError(404, f"unknown category {name!r}; see GET /v1/categories")
        wait = request.query_params.get("wait", "").lower() in {"1", "true", "yes"}
        uploads, _fields = await read_uploads(request)
        await run_in_threadpool(_decode_all, uploads, settings.max_pixels)  # refuse bad images before queuing
        paths = await run_in_threadpool(_save_all, settings.root, name, uploads)
        job = updates.submit(name, paths)
        if not wait:
            return JSONResponse({"category": name, "queued": len(paths), "pending": updates.pending}, status_code=202)
        try:
            summary = await asyncio.wrap_future(job.future)
        except RegistryError as error:
            raise ServeError(409, str(error)) from None
        return JSONResponse(summary)

    async def infer(request: Request) -> Response:
        category_name = request.query_params.get("category") or None
        overlay = request.query_params.get("overlay", "").lower() in {"1", "true", "yes"}
        uploads, fields = await read_uploads(request)
        category_name = fields.get("category") or category_name
        if fields.get("overlay", "").lower() in {"1", "true", "yes"}:
            overlay = True
        names = [name for name, _ in uploads]
        images = await run_in_threadpool(_decode_all, uploads, settings.max_pixels)
        job = scoring.submit(names, images, category_name, overlay)
        results: list[Scored] = await asyncio.wrap_future(job.future)
        failed = [r.record["error"] for r in results if r.record["error"]]
        if failed:
            raise ServeError(503, str(failed[0]))
        records = await run_in_threadpool(_with_overlays, results) if overlay else [r.record for r in results]
        return JSONResponse({"records": records})

    async def serve_error(_request: Request, error: Exception) -> Response:
        assert isinstance(error, ServeError)
        return _error(error.status, error.message)

    async def http_error(_request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _error(error.status_code, str(error.detail), dict(error.headers or {}))

    async def internal_error(_request: Request, error: Exception) -> Response:
        log.error("unhandled error", exc_info=error)
        return _error(500, "internal server error; see the server log")

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/v1/categories", categories),
        Route("/v1/categories/{name}", category),
        Route("/v1/categories/{name}/good", good, methods=["POST"]),
        Route("/v1/infer", infer, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, settings=settings, metrics=metrics)],
        exception_handlers={ServeError: serve_error, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )


def _summary(category: dict[str, Any]) -> dict[str, Any]:
    """A category's line in ``GET /v1/categories``: versions with sizes and thresholds."""
    versions = [
        {
            key: version[key]
            for key in (
                "version",
                "is_current",
                "created_at",
                "n_train_images",
                "bank_size",
                "n_prototypes",
                "route_threshold",
                "thresholds",
                "threshold_rule",
                "threshold_summary",
                "origin",
            )
        }
        for version in category["versions"]
    ]
    current = next((v for v in versions if v["is_current"]), None)
    return {
        "name": category["name"],
        "description": category["description"],
        "current_version": category["current_version"],
        "thresholds": current["thresholds"] if current else None,
        "threshold_rule": current["threshold_summary"] if current else None,
        "bank_size": current["bank_size"] if current else None,
        "versions": versions,
    }


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    too_large = f"request body over the upload limit of {limit} bytes"
    if declared.isdigit() and int(declared) > limit:
        raise ServeError(413, too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_multipart(
    request: Request, body: bytes, max_files: int
) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The uploaded files (name, bytes) and text fields of a multipart body already read."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=16, max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise ServeError(400, f"malformed multipart body: {error.message}") from None
    uploads: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.append((_upload_name(value.filename, len(uploads)), await value.read()))
            else:
                fields[key] = value
    finally:
        await form.close()
    return uploads, fields


def _decode_all(uploads: list[tuple[str, bytes]], max_pixels: int) -> list[Image.Image]:
    """Decode every upload (the whole request is refused on the first bad image)."""
    images = []
    for name, data in uploads:
        try:
            images.append(decode_image(data, name, max_pixels))
        except ImageReadError as error:
            raise ServeError(_status_of(error), str(error)) from None
    return images


#: Image formats kept with their usual suffix (anything else PIL reads is kept as ``.img``).
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def _save_all(root: Any, category: str, uploads: list[tuple[str, bytes]]) -> list[Any]:
    """Keep every upload under the registry's ``feedback/<category>/`` (named by content hash)."""
    import io

    paths = []
    for _name, data in uploads:
        with Image.open(io.BytesIO(data)) as image:
            suffix = _SUFFIXES.get(str(image.format), ".img")
        paths.append(save_upload(root, category, data, suffix))
    return paths


def _with_overlays(results: list[Scored]) -> list[dict[str, Any]]:
    records = []
    for result in results:
        record = dict(result.record)
        record["overlay_png"] = overlay_png_base64(result) if result.crop is not None else None
        records.append(record)
    return records
