"""Images: upload (per-file outcomes; large batches as a job), the per-image record, its bytes, labels."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Body, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse

from api.deps import Caller
from api.problems import ApiError, problem
from core import IMAGE_MEDIA_TYPES, Action, IngestReport, require

router = APIRouter(prefix="/v1", tags=["images"])

_IMAGE_BYTES = {200: {"content": {"image/*": {}}, "description": "The image's bytes"}}


async def _read_uploads(files: list[UploadFile], limit: int) -> list[tuple[str, bytes]]:
    """(name, bytes) per file; a file over ``limit`` is read only one byte past it, enough for the
    ingest to reject it by size without holding the rest in memory."""
    return [(f.filename or "upload", await f.read(limit + 1)) for f in files]


@router.post("/images", summary="Upload images (multipart, many files)",
             responses={202: {"description": "A large batch, accepted as a job (poll GET /v1/jobs/{job_id})"},
                        413: {"description": "Too many files in one request"},
                        422: {"description": "No file was stored; the per-file reasons are in `files`"}})
async def upload(collection: Caller, files: Annotated[list[UploadFile], File()],
                 source: Annotated[str | None, Form(max_length=200)] = None) -> Response:
    """Per file, as `visual-anomaly ingest --json`: ingested (with the nearest stored image and its
    verdict), already present, or rejected with the reason."""
    settings = collection.settings
    require(collection.actor, Action.UPLOAD)
    if len(files) > settings.api_max_files:
        raise ApiError(413, "files", f"{len(files)} files in one request; send at most {settings.api_max_files}.")
    uploads = await _read_uploads(files, settings.max_upload_bytes)
    if len(uploads) > settings.api_job_files:
        job = collection.start_ingest_job(uploads, source=source)
        return JSONResponse(job.to_json(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
    return report_response(collection.ingest_uploads(uploads, source=source))


def report_response(report: IngestReport) -> Response:
    """An ingest's per-file outcomes; a 422 problem listing each reason when no file was stored."""
    body = report.to_json()
    if body["rejected"] and not body["ingested"] and not body["already_present"]:
        first = body["rejected"][0]
        return problem(422, f"No file was stored; {first['file']}: {first['reason']}", field="files",
                       files=body["files"])
    return JSONResponse(body)


@router.get("/jobs/{job_id}", summary="Progress and result of an upload job",
            responses={404: {"description": "Unknown, not yours, or (without Redis) started by another worker"}})
def job(job_id: str, collection: Caller) -> dict:
    """Any worker answers when the cache is Redis; without it only the worker that took the upload."""
    return collection.job(job_id).to_json()


@router.get("/images", summary="One page of the visible images, sorted and filtered")
def list_images(
    collection: Caller,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    sort: Literal["arrival", "name", "source", "size", "pixels"] = "arrival",
    descending: bool = False,
    source: Annotated[str | None, Query(max_length=200, description="any source it arrived under")] = None,
    name_contains: Annotated[str | None, Query(max_length=200, description="case-insensitive")] = None,
) -> dict:
    page = collection.list_images(offset=offset, limit=limit, sort=sort, descending=descending, source=source,
                                  name_contains=name_contains)
    return {"items": [asdict(i) for i in page.items], "offset": page.offset, "limit": page.limit,
            "total": page.total, "next_offset": page.next_offset}


@router.get("/images/{image_id}", summary="The per-image record: names, review state, scores and neighbours")
def image(image_id: str, collection: Caller) -> dict:
    return asdict(collection.image_detail(image_id))  # NotFound for an unknown or invisible id


@router.get("/images/{image_id}/thumbnail", response_class=Response, responses=_IMAGE_BYTES,
            summary="The gallery thumbnail (JPEG), or a redirect to a presigned URL")
def thumbnail(image_id: str, collection: Caller) -> Response:
    url = collection.thumbnail_url(image_id)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    return Response(collection.thumbnail(image_id), media_type="image/jpeg")


@router.get("/images/{image_id}/original", response_class=Response, responses=_IMAGE_BYTES,
            summary="The original bytes as uploaded, or a redirect to a presigned URL")
def original(image_id: str, collection: Caller) -> Response:
    url = collection.original_url(image_id)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    data = collection.original(image_id)
    info = collection.images([image_id])
    media = IMAGE_MEDIA_TYPES.get(info[0].format, "application/octet-stream") if info else "application/octet-stream"
    return Response(data, media_type=media)


@router.put("/images/{image_id}/label", summary="Record (or clear, with null) an analyst's review label")
def label(image_id: str, collection: Caller,
          value: Annotated[Literal["anomaly", "normal"] | None, Body(embed=True, alias="label")]) -> dict:
    collection.label(image_id, value)
    return {"image_id": image_id, "label": value}
