"""Duplicates and anomalies: the CLI's parameters and columns, paged as JSON or whole as CSV.

Both carry an ETag; a client sending it back in ``If-None-Match`` gets ``304`` while nothing it
would see has changed (new images, other thresholds, a changed label all change it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import Caller
from core import (
    ANOMALY_COLUMNS,
    DEFAULT_ANOMALY_METHOD,
    DUPLICATE_COLUMNS,
    METHODS,
    DuplicateThresholds,
    csv_chunks,
)

router = APIRouter(prefix="/v1", tags=["analysis"])

Offset = Annotated[int, Query(ge=0, description="first row of the page")]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page (JSON only; CSV has every row)")]
_CSV = {200: {"content": {"text/csv": {}}, "description": "JSON by default; every row as CSV with Accept: text/csv"},
        304: {"description": "Not modified since the ETag sent in If-None-Match"}}


def _respond(version: int, header: dict, rows: list[dict], columns: Sequence[str], offset: int, limit: int,
             accept: str | None, if_none_match: str | None) -> Response:
    """The page as JSON or every row as CSV, with an ETag: the collection version, and a digest of
    what the client would receive (labels change anomaly rows without changing the version)."""
    as_csv = "text/csv" in (accept or "")
    digest = hashlib.sha256(json.dumps([header, rows, as_csv], default=str, sort_keys=True).encode()).hexdigest()
    etag = f'"v{version}-{digest[:32]}"'
    if if_none_match and etag in {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    if as_csv:
        return StreamingResponse(csv_chunks(rows, columns), media_type="text/csv; charset=utf-8",
                                 headers={"ETag": etag})
    end = offset + limit
    body = header | {"total": len(rows), "offset": offset, "limit": limit,
                     "next_offset": end if end < len(rows) else None, "rows": rows[offset:end]}
    return JSONResponse(body, headers={"ETag": etag})


@router.get("/duplicates", response_class=Response, responses=_CSV,
            summary="Exact and near duplicates: one row per image in a cluster")
def duplicates(
    collection: Caller,
    similarity: Annotated[float | None, Query(le=1.0, description="calibrated similarity threshold")] = None,
    cosine: Annotated[float | None, Query(ge=-1.0, le=1.0, description="raw cosine, translated")] = None,
    hamming: Annotated[int, Query(ge=0, le=64, description="pHash bits")] = DuplicateThresholds().hamming,
    crop: Annotated[float, Query(description="crop correlation (above 1: no crops)")] = DuplicateThresholds().crop,
    rule: Literal["either", "both"] = "either",
    offset: Offset = 0,
    limit: Limit = 100,
    accept: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    thresholds = DuplicateThresholds(rule=rule, hamming=hamming, crop=crop)
    if cosine is not None:
        thresholds = replace(thresholds, similarity=float(collection.duplicates(thresholds).scale.similarity(cosine)))
    elif similarity is not None:
        thresholds = replace(thresholds, similarity=similarity)
    version = collection.version()
    view = collection.duplicates(thresholds)
    header = {"thresholds": asdict(view.thresholds), "clusters": view.cluster_count, "pairs": view.pair_count,
              "images": view.images}
    return _respond(version, header, view.rows(), DUPLICATE_COLUMNS, offset, limit, accept, if_none_match)


@router.get("/anomalies", response_class=Response, responses=_CSV,
            summary="Every image ranked by how unusual it is, most unusual first")
def anomalies(
    collection: Caller,
    method: Literal[METHODS] = DEFAULT_ANOMALY_METHOD,  # type: ignore[valid-type]
    k: Annotated[int | None, Query(ge=1, le=1000, description="neighbours (default: the graph's)")] = None,
    top: Annotated[int | None, Query(ge=1, description="select the N most unusual")] = None,
    threshold: Annotated[float | None, Query(description="select scores at or above this")] = None,
    contamination: Annotated[float | None, Query(gt=0, le=100, description="select this percent")] = None,
    offset: Offset = 0,
    limit: Limit = 100,
    accept: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    version = collection.version()
    view = collection.anomalies(method=method, k=k, threshold=threshold, top=top, contamination=contamination)
    header = {"method": view.method, "k": view.k, "selected": len(view.selected)}
    return _respond(version, header, view.to_rows(), ANOMALY_COLUMNS, offset, limit, accept, if_none_match)
