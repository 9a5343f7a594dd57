"""RFC 9457 problem details: the one place where errors become HTTP responses.

Core's domain errors carry their own status; request validation (FastAPI), the API's own limits and
Starlette's parser errors are mapped here too, so every refusal has the same shape and names the field
it is about. Anything else is a bug: logged with its traceback and answered with a bare 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core import Busy, DomainError, InvalidRequest, NotFound, SettingsError

PROBLEM_TYPE = "application/problem+json"
_log = logging.getLogger("visual_anomaly.api")


class ApiError(Exception):
    """A refusal the API itself makes (a token, a limit): a status, a field and a sentence."""

    def __init__(self, status: int, field: str | None, detail: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.field, self.detail, self.headers = status, field, detail, headers or {}
        super().__init__(detail)


_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           406: "Not acceptable", 409: "Busy", 413: "Too large", 415: "Unsupported media type",
           422: "Invalid request", 429: "Too many requests", 500: "Internal error", 503: "Unavailable"}


def problem(status: int, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None,
            title: str | None = None, **extra: object) -> JSONResponse:
    body: dict[str, object] = {"type": "about:blank", "title": title or _TITLES.get(status, "Error"), "status": status,
                               "detail": detail}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers: dict[str, str] = {}
    field = None
    if isinstance(exc, InvalidRequest):
        field = exc.field
    elif isinstance(exc, NotFound):
        field = exc.what
    elif isinstance(exc, Busy):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return problem(exc.http_status, str(exc), field=field, headers=headers, title=exc.title)


_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _field(location: tuple | list) -> str:
    """``("query", "k")`` -> ``"k"``: the name the caller sent, not where FastAPI found it."""
    parts = [str(p) for p in location]
    return ".".join(parts[1:] if parts and parts[0] in _LOCATIONS else parts) or "body"


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _field(e.get("loc", ())), "reason": e.get("msg", "")} for e in exc.errors()]
    first = errors[0] if errors else {"field": None, "reason": "invalid request"}
    return problem(422, f"Invalid {first['field']}: {first['reason']}", field=first["field"], errors=errors)


def _api(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.detail, field=exc.field, headers=exc.headers)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code if 400 <= exc.status_code < 500 else 400
    return problem(status, str(exc.detail), headers=dict(exc.headers or {}))


def _settings(_request: Request, exc: Exception) -> JSONResponse:
    return problem(503, str(exc))


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "An unexpected error occurred; it has been logged.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(SettingsError, _settings)
    app.add_exception_handler(Exception, _unexpected)
