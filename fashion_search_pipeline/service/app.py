"""The ASGI app: the /v1 search API, health and metrics routes, and the search page, over one CatalogSearch.

Read-only: no route writes to the database or the landing area. Models and table handles are
loaded at start in the background (`/readyz` answers 503 until they are); tables are re-read
within CatalogSearch's read-consistency interval, so a newly materialized drop becomes
searchable without a restart. One model version per answer: while a retrain's re-embedding has
the tables hold two versions, or changes them under a query, searches answer 503 naming the new version.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from fashion_search_pipeline.columns import (
    CONTENT_HASH,
    DESCRIPTION,
    IMAGE_URI,
    ITEM_ID,
    MATCHED,
    MODEL_VERSION,
    RANK,
    SCORE,
)
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.search import READ_CONSISTENCY, CatalogSearch, ReembeddingInProgressError
from fashion_search_pipeline.service.catalog_view import CatalogView
from fashion_search_pipeline.service.encoding import QueryEncoder
from fashion_search_pipeline.service.metrics import ServiceMetrics
from fashion_search_pipeline.service.schemas import SearchOptions, SearchRequest, SearchResponse
from fashion_search_pipeline.service.settings import ServiceSettings
from fashion_search_pipeline.service.thumbnails import MAX_SIZE, MIN_SIZE, ThumbnailCache
from fashion_search_pipeline.service.uploads import BodyLimitMiddleware, QueryImageError, decode_query_image
from fashion_search_pipeline.store.clusters import VARIANTS
from fashion_search_pipeline.store.filters import FilterError, UnknownFilterAttributeError, filter_expression
from fashion_search_pipeline.store.fusion import STRATEGIES

OPEN_ROUTES = ("/healthz", "/readyz")
API_KEY_HEADER = "x-api-key"
API_KEY_COOKIE = "fashion_search_api_key"
STATIC = resources.files("fashion_search_pipeline.service") / "static"
# A base64 body is 4/3 of the image, plus the JSON around it.
BASE64_OVERHEAD = 4 / 3
JSON_ALLOWANCE = 64 * 1024
PAGE_BLOCK = 100
# Encodings of one query when the tables' model version changed while it ran (a retrain finishing).
QUERY_ATTEMPTS = 2


class ApiError(Exception):
    """An answer other than 200, with a message and extra fields (the valid choices)."""

    def __init__(self, status: int, detail: str, **extra):
        self.status, self.detail, self.extra = status, detail, extra


def create_app(settings: ServiceSettings, search: CatalogSearch | None = None) -> FastAPI:
    """The service over `settings.db_uri` and `settings.models_file` (or over `search`, when given)."""
    search = search or CatalogSearch(
        settings.db_uri, s3=settings.s3, registry=settings.models_file, models_root=settings.models_root
    )
    state = _ServiceState(settings, search)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        threading.Thread(target=state.warm_up, name="warm-up", daemon=True).start()
        try:
            yield
        finally:
            state.encoder.close()
            search.close()

    app = FastAPI(
        title="fashion_search_pipeline search service",
        version="1",
        description="Cross-modal product search (text, photo, more like this) over the catalog's CLIP tables.",
        lifespan=lifespan,
    )
    app.state.service = state
    _add_routes(app, state)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ReembeddingInProgressError, _reembedding)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["content-type", API_KEY_HEADER])
    app.add_middleware(BodyLimitMiddleware, max_bytes=_body_limit(settings.max_upload_bytes))
    app.add_middleware(_ObservedMiddleware, state=state)
    return app


def _body_limit(max_upload_bytes: int) -> int:
    return int(max_upload_bytes * BASE64_OVERHEAD) + JSON_ALLOWANCE


class _ServiceState:
    """Everything the routes share: the search, the views of the tables, the encoder, the metrics."""

    def __init__(self, settings: ServiceSettings, search: CatalogSearch):
        self.settings = settings
        self.search = search
        self.view = CatalogView(search, settings.models_root)
        self.metrics = ServiceMetrics(self.view.table_stats)
        self.encoder = QueryEncoder(search, settings.batch_window_s, settings.max_batch, self.metrics.batch_size)
        self.thumbnails = ThumbnailCache(settings.s3)
        self.ready = threading.Event()
        self.model_status: dict[str, str] = {}

    def warm_up(self) -> None:
        """Open every model's tables and load its weights by encoding one query; record failures."""
        for model in self.search.models_with_tables():
            try:
                self.view.tables(model)
                try:
                    self.encoder.text(model, "warm up")
                except ReembeddingInProgressError:  # ready: its searches answer 503 until the re-embedding ends
                    load_clip(self.search.registry[model])
                self.model_status[model] = "ready"
            except Exception as error:  # a model that cannot load is reported, the others still serve
                self.model_status[model] = f"unavailable: {str(error).splitlines()[0]}"
        self.ready.set()

    def model(self, name: str | None) -> str:
        """The model a request names (default: the first with tables); 404 listing the choices."""
        available = self.search.models_with_tables()
        if not available:
            raise ApiError(503, "no model has embedding tables yet; materialize the embeddings assets first")
        if name is None:
            return self.search.default_model if self.search.default_model in available else available[0]
        if name not in available:
            raise ApiError(404, f"unknown model {name!r}", models=available)
        return name


def _add_routes(app: FastAPI, state: _ServiceState) -> None:
    @app.get("/", include_in_schema=False)
    def page(api_key: str | None = None):
        if api_key is not None:  # a browser user hands the key over once; it is kept as a cookie
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(API_KEY_COOKIE, api_key, httponly=True, samesite="strict")
            return response
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/healthz", tags=["operations"])
    def healthz():
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz():
        """200 once models are loaded and tables open (503 before), with each model's status."""
        ready = state.ready.is_set() and any(status == "ready" for status in state.model_status.values())
        body = {"ready": ready, "models": state.model_status}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    def metrics():
        """Prometheus metrics: requests, latency per route and stage, batch sizes, table gauges."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/search", response_model=SearchResponse, tags=["search"])
    def search(request: SearchRequest):
        """Products for a text, a base64 image or an item id ("more like this")."""
        timings: dict[str, float] = {}
        image = None
        if request.image is not None:
            image = _decoded_base64(request.image, state.settings.max_upload_bytes, timings)
        return _search(state, request, image, timings)

    @app.post("/v1/search/image", response_model=SearchResponse, tags=["search"])
    async def search_upload(
        image: Annotated[UploadFile, File(description="the query photo")],
        model: Annotated[str | None, Form()] = None,
        k: Annotated[int, Form()] = 24,
        offset: Annotated[int, Form()] = 0,
        filters: Annotated[str, Form(description='JSON object, e.g. {"colour": ["Red", "Blue"]}')] = "{}",
        fusion: Annotated[str | None, Form()] = None,
        collapse: Annotated[bool, Form()] = False,
    ):
        """Products for an uploaded photo (multipart/form-data); same options as /v1/search."""
        data = await image.read(state.settings.max_upload_bytes + 1)
        options = _form_options(model=model, k=k, offset=offset, filters=filters, fusion=fusion, collapse=collapse)
        timings: dict[str, float] = {}
        picture = _decoded(data, state.settings.max_upload_bytes, timings)
        return await run_in_threadpool(_search, state, options, picture, timings)

    @app.get("/v1/items/{item_id}", tags=["catalog"])
    def item(item_id: str, model: str | None = None):
        """One product: description, attributes, thumbnail URL."""
        name = state.model(model)
        found = state.view.item(name, item_id)
        if found is None:
            raise ApiError(404, f"no item {item_id!r} in model {name!r}'s tables")
        return _item(found, state.view.attributes(name))

    @app.get("/v1/items/{item_id}/variants", tags=["catalog"])
    def item_variants(item_id: str, model: str | None = None):
        """The other products of the item's variant cluster (product_clusters): what a collapsed
        result's `variants` counts."""
        name = state.model(model)
        found = state.view.variants(name, item_id)
        if found is None:
            raise ApiError(404, f"no item {item_id!r} in model {name!r}'s tables")
        attributes = state.view.attributes(name)
        return {ITEM_ID: item_id, "model": name, "variants": [_item(row, attributes) for row in found]}

    @app.get("/v1/items/{item_id}/image", tags=["catalog"], response_class=Response)
    def item_image(item_id: str, size: int = Query(256, ge=MIN_SIZE, le=MAX_SIZE), model: str | None = None):
        """The item's photo as a JPEG thumbnail (longer side `size`), found by item id only."""
        name = state.model(model)
        found = state.view.item(name, item_id)
        if found is None or not found.get(IMAGE_URI):
            raise ApiError(404, f"no item {item_id!r} in model {name!r}'s tables")
        started = time.perf_counter()
        try:
            data = state.thumbnails.thumbnail(found[ITEM_ID], found.get(CONTENT_HASH) or "", found[IMAGE_URI], size)
        except (OSError, QueryImageError):
            raise ApiError(404, f"the image of item {item_id!r} cannot be read") from None
        state.metrics.observe_stages({"thumbnail": time.perf_counter() - started})
        return Response(data, media_type="image/jpeg", headers={"cache-control": "public, max-age=3600"})

    @app.get("/v1/models", tags=["catalog"])
    def models():
        """Models with tables: version, fusion, rows per table, model-card figures."""
        infos = []
        for name in state.search.models_with_tables():
            info = state.view.model_info(name)
            info["status"] = state.model_status.get(name, "loading")
            info["version"] = state.encoder.version(name)
            infos.append(info)
        return {"models": infos, "default": state.model(None) if infos else None, "fusions": list(STRATEGIES)}

    @app.get("/v1/facets", tags=["catalog"])
    def facets(model: str | None = None):
        """Attribute values with counts, for filters."""
        name = state.model(model)
        return {"model": name, "facets": state.view.facets(name)}


def _form_options(**fields) -> SearchOptions:
    try:
        fields["filters"] = json.loads(fields["filters"] or "{}")
    except json.JSONDecodeError as error:
        raise ApiError(422, f"filters must be a JSON object: {error}") from None
    try:
        return SearchOptions(**fields)
    except ValidationError as error:
        raise ApiError(422, "invalid search options", errors=json.loads(error.json(include_url=False))) from None


def _decoded_base64(text: str, max_bytes: int, timings: dict[str, float]):
    started = time.perf_counter()
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "image must be base64-encoded image bytes") from None
    timings["decode"] = time.perf_counter() - started
    return _decoded(data, max_bytes, timings)


def _decoded(data: bytes, max_bytes: int, timings: dict[str, float]):
    if len(data) > max_bytes:
        raise ApiError(413, f"image over the limit of {max_bytes} bytes")
    started = time.perf_counter()
    try:
        image = decode_query_image(data)
    except QueryImageError as error:
        raise ApiError(422, str(error)) from None
    timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - started
    return image


def _search(state: _ServiceState, request: SearchOptions, image, timings: dict[str, float]) -> dict:
    """Run one search (text, decoded image or item id) and build the answer."""
    started = time.perf_counter()
    model = state.model(request.model)
    if request.fusion is not None and request.fusion not in STRATEGIES:
        raise ApiError(422, f"unknown fusion {request.fusion!r}", fusions=list(STRATEGIES))
    attributes = state.view.attributes(model)
    try:
        where = filter_expression(request.filters, attributes)
    except UnknownFilterAttributeError as error:
        raise ApiError(422, str(error), attributes=error.attributes) from None
    except FilterError as error:
        raise ApiError(422, str(error)) from None
    item_id = getattr(request, "item_id", None)
    text = getattr(request, "text", None)
    wanted = _ranking_depth(request.offset + request.k + (1 if item_id else 0) + 1)  # +1: is there a next page?
    fusion = request.fusion or state.search.fusion_for(model)
    for _attempt in range(QUERY_ATTEMPTS):
        vector, version = _query_vector(state, model, item_id, text, image, timings)
        frame = state.search.vector(
            vector, model, k=wanted, where=where, fusion=fusion, timings=timings, keyword=text, collapse=request.collapse
        )
        # Read after the search: the tables only move forward to a new version, so when they still
        # hold only the query's version, so did the rows this search read.
        held = state.search.table_versions(model)
        if held <= {version}:
            break
    else:
        raise ReembeddingInProgressError.of(state.search.registry[model], held, encoded_by=version)
    if item_id is not None:
        frame = frame.filter(frame[ITEM_ID] != item_id)
    page = frame.slice(request.offset, request.k)
    state.metrics.observe_stages(timings)
    timings["total"] = time.perf_counter() - started
    return {
        "products": [_product(row, request.offset + index + 1, attributes)
                     for index, row in enumerate(page.iter_rows(named=True))],
        "model": model,
        "model_version": version,
        "fusion": fusion,
        "k": request.k,
        "offset": request.offset,
        "has_more": frame.height > request.offset + request.k,
        "timings_ms": {stage: round(seconds * 1000, 3) for stage, seconds in timings.items()},
    }


def _query_vector(state: _ServiceState, model: str, item_id: str | None, text: str | None, image,
                  timings: dict[str, float]):
    """The query's vector and the model version it belongs to: an item's stored image vector, or the
    text or image encoded by the version the tables hold."""
    if item_id is not None:
        found = state.view.item(model, item_id)
        if found is None:
            raise ApiError(404, f"no item {item_id!r} in model {model!r}'s tables")
        return found["vector"], found.get(MODEL_VERSION) or ""
    started = time.perf_counter()
    encoded = state.encoder.text(model, text) if text is not None else state.encoder.image(model, image)
    timings["encode"] = time.perf_counter() - started
    return encoded


def _ranking_depth(needed: int) -> int:
    """How many fused products to rank for a page that needs `needed`: whole blocks of PAGE_BLOCK.
    Fusion scores depend on how deep each table was searched, so pages ranked at the same depth
    (every page within the first PAGE_BLOCK products) follow each other without gaps or repeats."""
    return PAGE_BLOCK * -(-needed // PAGE_BLOCK)


def _product(row: dict, rank: int, attributes: list[str]) -> dict:
    return {
        ITEM_ID: row[ITEM_ID],
        DESCRIPTION: row.get(DESCRIPTION),
        "attributes": _attributes(row, attributes),
        SCORE: row[SCORE],
        MATCHED: row[MATCHED],
        RANK: rank,
        "thumbnail_url": _thumbnail_url(row[ITEM_ID]),
        VARIANTS: row.get(VARIANTS) or 0,
    }


def _item(row: dict, attributes: list[str]) -> dict:
    return {
        ITEM_ID: row[ITEM_ID],
        DESCRIPTION: row.get(DESCRIPTION),
        "drop_id": row.get("drop_id"),
        "attributes": _attributes(row, attributes),
        MODEL_VERSION: row.get(MODEL_VERSION),
        "thumbnail_url": _thumbnail_url(row[ITEM_ID]),
    }


def _attributes(row: dict, attributes: list[str]) -> dict[str, str]:
    return {name: row[name] for name in attributes if row.get(name) is not None}


def _thumbnail_url(item_id: str) -> str:
    return f"/v1/items/{quote(item_id, safe='')}/image"


async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse({"detail": error.detail, **error.extra}, status_code=error.status)


async def _reembedding(_request: Request, error: ReembeddingInProgressError) -> JSONResponse:
    retry_after = str(int(READ_CONSISTENCY.total_seconds()))
    return JSONResponse({"detail": str(error)}, status_code=503, headers={"retry-after": retry_after})


class _ObservedMiddleware:
    """Pure ASGI: the API key check (every route but OPEN_ROUTES), then request count and
    latency by route template, method and status."""

    def __init__(self, app, state: _ServiceState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        if not self._authorised(scope):
            await JSONResponse({"detail": "missing or wrong API key (header X-API-Key)"}, status_code=401)(
                scope, receive, send
            )
            self.state.metrics.observe_request("unauthorised", scope["method"], 401, time.perf_counter() - started)
            return

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/") else "unmatched")
            self.state.metrics.observe_request(label, scope["method"], status, time.perf_counter() - started)

    def _authorised(self, scope) -> bool:
        key = self.state.settings.api_key
        if key is None or scope["path"] in OPEN_ROUTES or scope["method"] == "OPTIONS":
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(API_KEY_HEADER.encode(), b"").decode("latin-1")
        if not given:
            cookies = headers.get(b"cookie", b"").decode("latin-1")
            prefix = API_KEY_COOKIE + "="
            given = next((part[len(prefix):] for part in cookies.split("; ") if part.startswith(prefix)), "")
        if not given:
            given = _query_key(scope) if scope["path"] == "/" else ""
        return hmac.compare_digest(given.encode(), key.encode())


def _query_key(scope) -> str:
    return parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key", [""])[0]
