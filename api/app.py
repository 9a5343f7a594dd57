"""The API's app factory: ``create_app(collection)`` gives a FastAPI app over that collection.

The collection passed in acts as the process's own admin, only to find users and the signing
secret; every request acts as its token's user (:mod:`api.auth`). Limits and CORS come from the
collection's settings (``API_*``); errors become problem details in one place (:mod:`api.problems`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from api import problems
from api.auth import RateLimiter, TokenSigner
from api.deps import ApiState
from api.routers import analysis, auth, health, images, review, search, uploads
from core import Collection, record_request

TITLE = "visual-anomaly API"
VERSION = "1"


def create_app(collection: Collection) -> FastAPI:
    settings = collection.settings
    app = FastAPI(title=TITLE, version=VERSION,
                  description="Upload, search, duplicates, anomalies and labels over the visual-anomaly facade.")
    app.state.api = ApiState(
        collection=collection,
        signer=TokenSigner(collection.auth_secret(), settings.api_token_ttl_s),
        limiter=RateLimiter(settings.api_rate_limit),
    )
    problems.install(app)
    for router in (auth.router, images.router, uploads.router, review.router, search.router, analysis.router,
                   health.router):
        app.include_router(router)
    max_body = settings.api_max_body_mb * 1024 * 1024

    @app.middleware("http")
    async def limit_and_measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Refuse an oversized body before reading it; count and time every request by route."""
        started = time.perf_counter()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body:
            response: Response = problems.problem(
                413, f"The request body is {int(length)} bytes; at most {max_body} are accepted (API_MAX_BODY_MB).",
                field="body")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        record_request(request.method, endpoint, response.status_code, time.perf_counter() - started)
        return response

    if settings.api_cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.api_cors_origins),
                           allow_methods=["*"], allow_headers=["*"], expose_headers=["ETag", "Location", "Retry-After"])
    return app
