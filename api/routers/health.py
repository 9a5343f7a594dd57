"""Liveness, readiness and metrics: for orchestrators and Prometheus, without a token."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import State
from core import check_servers

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process answers")
def healthz() -> dict:
    return {"ok": True}


@router.get("/readyz", summary="Every configured store answers (503 if one does not)",
            responses={503: {"description": "A configured store does not answer"}})
def readyz(api: State) -> JSONResponse:
    checks = check_servers(api.collection.settings, timeout_s=2.0)
    ok = all(c.ok for c in checks)
    return JSONResponse({"ok": ok, "checks": [asdict(c) for c in checks]}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics, request counts and latencies per route",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
