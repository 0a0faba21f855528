"""The web application of ``fcnseg serve``: FastAPI routes over a :class:`~fcnseg.serve.service.Service`.

Routes: ``POST /predict`` (an image in, its mask out as a palette PNG or JSON), ``GET /health`` (200 once the model
is loaded and warmed up, 503 before), ``GET /info``, the Open Inference Protocol v2 routes of :mod:`.v2`, the page at
``/`` (``static/``) and FastAPI's OpenAPI description (``/openapi.json``, served offline at ``/docs`` and
``/redoc``). With an API key, every route but the health checks, the page's own files and the API description
requires ``Authorization: Bearer <key>``. Every refusal and failure is one line of JSON, ``{"error": "..."}``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fcnseg.inference.predictor import Predictor
from fcnseg.serve.batching import QueueFull
from fcnseg.serve.config import ServeConfig, fcnseg_version
from fcnseg.serve.results import mask_png, prediction_json
from fcnseg.serve.schemas import ErrorBody, Health, Info, Prediction
from fcnseg.serve.service import Service
from fcnseg.serve.uploads import BadInput, check_media_type
from fcnseg.serve.v2 import v2_router

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "image/webp", "image/bmp", "application/octet-stream")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image: a multipart upload (field 'file') or the raw file as the body",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _BINARY["schema"]}, "required": ["file"]}
            },
            **{media: _BINARY for media in IMAGE_TYPES},
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "empty body, truncated or corrupt image",
        401: "missing or wrong API key",
        413: "body beyond --max-body-mb, or image beyond --max-pixels",
        415: "not an image",
        422: "a band count the model cannot take, or a bad parameter",
        503: "--max-queue images already waiting for the model: retry (Retry-After)",
    }.items()
}


BEARER = HTTPBearer(auto_error=False, description="the server's --api-key (or FCNSEG_API_KEY)")


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "error"


def _error(status: int, message: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: reads each request body up to ``max_bytes`` and answers 413 beyond.

    A larger body is read on (and dropped) up to ``max_bytes`` more, so that a client that sends its whole body
    before reading the answer gets the 413 rather than a reset connection; beyond that the connection is closed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_long = not declared.isdigit() or int(declared) > 2 * self.max_bytes
        chunks, size, more = [], 0, not too_long
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size <= self.max_bytes:
                chunks.append(body)
            more = message.get("more_body", False) and size <= 2 * self.max_bytes
        if too_long or size > self.max_bytes:
            limit = f"{self.max_bytes / 2**20:g} MiB"
            answer = _error(413, f"the request body is larger than this server's limit of {limit} (--max-body-mb)")
            await answer(scope, receive, send)
            return
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the whole ``body`` once, then waits on the real one (for the disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _api_key_check(api_key: str | None) -> list[Any]:
    """The route dependencies that require ``api_key`` as a bearer token (none when there is no key)."""
    if api_key is None:
        return []
    expected = api_key.encode()

    def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not secrets.compare_digest(given, expected):
            raise HTTPException(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
            )

    return [Depends(require_key)]


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal and failure as ``{"error": "<one line>"}``."""

    async def bad_input(request: Request, err: BadInput) -> JSONResponse:
        return _error(err.status, err.message)

    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, err.detail, getattr(err, "headers", None))

    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    async def busy(request: Request, err: QueueFull) -> JSONResponse:
        return _error(503, err, {"Retry-After": "1"})

    async def failed(request: Request, err: Exception) -> JSONResponse:
        logger.exception("request %s %s failed", request.method, request.url.path)
        return _error(500, f"internal error ({type(err).__name__}: {err}); see the server's log")

    app.add_exception_handler(BadInput, bad_input)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(QueueFull, busy)
    app.add_exception_handler(Exception, failed)


async def upload_bytes(request: Request) -> bytes:
    """The uploaded file: the one file of a multipart body, or the raw body (see :func:`check_media_type`)."""
    media = check_media_type(request.headers.get("content-type"))
    if media != "multipart/form-data":
        return await request.body()
    async with request.form(max_files=1, max_fields=8) as form:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise BadInput(400, "the multipart body holds no file: send the image in a field named 'file'")
        return await files[0].read()


def _wants_json(request: Request, requested: str | None) -> bool:
    if requested is not None:
        return requested == "json"
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/png" not in accept


def create_app(predictor: Predictor, config: ServeConfig) -> FastAPI:
    """The application serving ``predictor`` with ``config`` (run it with uvicorn, or FastAPI's ``TestClient``).

    The model warms up when the application starts (its lifespan); ``/health`` answers 503 until then.
    """
    service = Service(predictor, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPIOffline(
        title="fcnseg",
        version=fcnseg_version(),
        summary="Semantic segmentation with a fully convolutional network",
        description=f"Serves the model `{config.model_name}`: {len(service.classes.names)} classes, "
        f'{predictor.bands}-band images. Errors are `{{"error": "..."}}`.',
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    _add_error_handlers(app)
    auth = _api_key_check(config.api_key)
    _add_routes(app, service, auth)
    app.include_router(v2_router(service, auth))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_routes(app: FastAPI, service: Service, auth: list[Any]) -> None:
    config, classes = service.config, service.classes
    health = {503: {"model": Health, "description": "warming up, or the warm-up failed (the status says why)"}}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health", response_model=Health, responses=health, tags=["health"], summary="Readiness")
    async def get_health() -> JSONResponse:
        """Ready (200) once the model is loaded and warmed up; 503 before. Needs no API key."""
        return JSONResponse({"status": service.status}, status_code=200 if service.ready else 503)

    @app.get("/info", response_model=Info, dependencies=auth, responses=ERRORS, tags=["model"], summary="The model")
    async def get_info() -> dict[str, Any]:
        """The model: classes and colours, input bands, backend, precision, inference options, the server's limits."""
        p = service.predictor
        tile = p.tile_size
        return {
            "model": config.model_name,
            "classes": [
                {"index": k, "name": n, "color": list(c)}
                for k, (n, c) in enumerate(zip(classes.names, classes.colors, strict=True))
            ],
            "bands": p.bands,
            "backend": p.backend,
            "precision": p.computes_in,
            "device": str(p.device),
            "tile_size": list(tile) if isinstance(tile, tuple) else tile,
            "scales": list(p.scales),
            "flip": p.flip,
            "limits": {
                "max_pixels": config.max_pixels,
                "max_body_bytes": config.max_body_bytes,
                "max_batch_size": config.max_batch_size,
                "max_wait_ms": config.max_wait_ms,
                "max_queue": config.max_queue,
            },
            "ready": service.ready,
            "queued": service.batcher.pending if service.batcher else 0,
        }

    png_or_json = {"content": {"image/png": _BINARY}, "model": Prediction, "description": "the mask"}

    @app.post(
        "/predict",
        dependencies=auth,
        response_class=Response,
        responses={200: png_or_json, **ERRORS},
        openapi_extra=PREDICT_BODY,
        tags=["model"],
        summary="Segment an image",
    )
    async def predict(
        request: Request,
        format: Literal["png", "json"] | None = Query(
            None, description="png (default) or json; without it, 'Accept: application/json' asks for JSON"
        ),
        probabilities: bool = Query(False, description="with format=json: also the softmax of every class"),
    ) -> Response:
        """Segment one image; the mask comes back as a palette PNG (pixel value = class index) or as JSON."""
        as_json = _wants_json(request, format)
        if probabilities and not as_json:
            raise BadInput(400, "probabilities come in JSON: add format=json")
        image = await service.decode(await upload_bytes(request))
        mask, probs = await service.segment(image, probabilities)
        if as_json:
            body = await run_in_threadpool(prediction_json, mask, classes, config.model_name, probs)
            return JSONResponse(body)
        return Response(await run_in_threadpool(mask_png, mask, classes.colors), media_type="image/png")
