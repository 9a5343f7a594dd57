"""Presigned uploads (S3 blobs only): ask for a PUT URL, PUT the file to S3, then ingest it by key.

Files never pass through the API process; core checks the declared name, type and size, and again
what was actually put (see ``core/uploads.py``). Without S3 both calls answer 409 ("Not configured").
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Body, Response

from api.deps import Caller
from api.routers.images import report_response

router = APIRouter(prefix="/v1", tags=["images"])

_NEEDS_S3 = {409: {"description": "Not configured: blobs are files here, not on S3 (use POST /v1/images)"}}


@router.post("/uploads", summary="A presigned PUT URL for one file (S3 only)", responses=_NEEDS_S3)
def open_upload(
    collection: Caller,
    file_name: Annotated[str, Body(max_length=1024)],
    content_type: Annotated[str, Body(max_length=100, description="image/jpeg, image/png, ...")],
    size: Annotated[int, Body(description="bytes; at most MAX_UPLOAD_MB")],
) -> dict:
    """PUT the file's bytes to `url` before it expires, then call `POST /v1/uploads/{key}/ingest`."""
    return asdict(collection.upload_slot(file_name, content_type, size))


@router.post("/uploads/{key}/ingest", summary="Ingest the file PUT to an upload URL (S3 only)",
             responses=_NEEDS_S3 | {422: {"description": "Nothing was put yet, or the file was rejected"}})
def ingest_upload(key: str, collection: Caller,
                  source: Annotated[str | None, Body(embed=True, max_length=200)] = None) -> Response:
    """The per-file outcome, as `POST /v1/images`. The uploaded object is then removed (the image is
    stored like any other), unless a store failed: then it stays and the call can be retried."""
    return report_response(collection.ingest_upload(key, source=source))
