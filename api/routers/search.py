"""Search by text, uploaded image or stored image; embeddings for callers with their own store."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from api.deps import Caller
from core import SearchFilter

router = APIRouter(prefix="/v1", tags=["search"])

MAX_TEXT = 1000  # characters: a query, not a document (the facade refuses longer ones too)


async def _image_bytes(image: UploadFile | None, limit: int) -> bytes | None:
    return None if image is None else await image.read(limit + 1)


@router.post("/search", summary="Images nearest to a text, an uploaded image, or a stored image")
async def search(
    collection: Caller,
    text: Annotated[str | None, Form(max_length=MAX_TEXT)] = None,
    image_id: Annotated[str | None, Form(max_length=200)] = None,
    image: Annotated[UploadFile | None, File(description="an image to search by (not stored)")] = None,
    k: Annotated[int, Form(ge=1, le=1000)] = 20,
    min_score: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
    source: Annotated[list[str] | None, Form()] = None,
    uploader: Annotated[list[str] | None, Form()] = None,
    format: Annotated[list[str] | None, Form()] = None,
) -> dict:
    filters = SearchFilter(sources=tuple(source or ()), uploaders=tuple(uploader or ()), formats=tuple(format or ()))
    response = collection.search(text=text, image=await _image_bytes(image, collection.settings.max_upload_bytes),
                                 image_id=image_id, k=k, min_score=min_score, filters=filters)
    return {"query": response.query, "seconds": round(response.seconds, 4),
            "results": [asdict(r) for r in response.results]}


@router.post("/embed", summary="The model's embedding of an uploaded image or a text (nothing is stored)")
async def embed(
    collection: Caller,
    text: Annotated[str | None, Form(max_length=MAX_TEXT)] = None,
    image: Annotated[UploadFile | None, File()] = None,
) -> dict:
    vector = collection.embed(text=text, image=await _image_bytes(image, collection.settings.max_upload_bytes))
    return {"dim": len(vector), "embedding": [float(v) for v in vector]}
