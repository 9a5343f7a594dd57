"""Review decisions over HTTP: keep/remove per image, keep rules over duplicate clusters, soft delete."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query

from api.deps import Caller
from core import KEEP_RULES, DuplicateThresholds

router = APIRouter(prefix="/v1", tags=["review"])


@router.put("/images/{image_id}/decision", summary="Mark an image keep or remove (null clears); undo token returned")
def decision(image_id: str, collection: Caller,
             value: Annotated[Literal["keep", "remove"] | None, Body(embed=True, alias="decision")]) -> dict:
    return asdict(collection.decide([image_id], value))


@router.post("/duplicates/keep-rule", summary="Preview (default) or apply a keep rule over every duplicate cluster")
def keep_rule(
    collection: Caller,
    rule: Annotated[Literal[tuple(KEEP_RULES)], Body()],  # type: ignore[valid-type]
    source: Annotated[str | None, Body(max_length=200)] = None,
    override: Annotated[bool, Body()] = False,
    apply: Annotated[bool, Body()] = False,
) -> dict:
    plan = collection.preview_keep_rule(rule, DuplicateThresholds(), source, override=override)
    body = {"rule": plan.rule, "changes": plan.changes(), "clusters": [asdict(c) for c in plan.clusters]}
    if apply:
        body["applied"] = asdict(collection.apply_keep_rule(plan))
    return body


@router.delete("/images/{image_id}", summary="Soft delete an image (restorable); admins purge with ?purge=true")
def delete(image_id: str, collection: Caller, purge: Annotated[bool, Query()] = False) -> dict:
    count = collection.purge_images([image_id]) if purge else collection.remove_images([image_id])
    return {"image_id": image_id, "purged" if purge else "removed": count}
