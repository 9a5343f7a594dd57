"""Presigned uploads (S3 blobs only): a client PUTs a file straight to the bucket, then asks for it
to be ingested, so large files and pipelines never stream their bytes through the app.

1. :func:`open_slot` checks the file's name, declared type and declared size, writes a small ticket
   (who asked, the file name) at ``uploads/<key>.json`` and returns a presigned PUT URL for
   ``uploads/<key>`` that expires in :data:`UPLOAD_URL_TTL_S` seconds.
2. The client PUTs the bytes to that URL, to S3 itself.
3. :func:`claim` reads the object back for the ticket's owner (or an admin), at most ``MAX_UPLOAD_MB``
   plus one byte: a presigned PUT cannot bound what is put, so the limit is enforced on what is read,
   and an object over it is rejected by size without the rest being read. The facade then ingests
   it like any uploaded file: it is decoded, so a text file declared ``image/jpeg`` is rejected.

What happens to the uploaded object (a choice, documented in the README): once the ingest has an
outcome for it (ingested, already present or rejected) it is deleted with its ticket, because the
image itself is stored under ``originals/`` like any other and a rejected file is of no use. It is
kept when a store failed mid-ingest, so the same ingest call can be retried. A slot that is never
ingested leaves its ticket (and any object) under ``uploads/``: give the bucket a lifecycle rule
that expires that prefix after a day.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass

from core import validation
from core.access import Actor, Role
from core.errors import InvalidRequest, NotConfigured, NotFound
from core.images import MEDIA_TYPES
from core.settings import Settings
from core.storage.blobs import BlobStore

UPLOAD_URL_TTL_S = 900
_KEY = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class UploadSlot:
    """Where to PUT one file, and the key that ingests it afterwards."""

    key: str
    url: str  # presigned: PUT the file's bytes here, with no other credentials
    method: str
    file_name: str
    content_type: str
    size: int  # as declared; what is read at ingest is bounded by max_bytes, not by this
    max_bytes: int
    expires_at: float  # Unix time after which the URL refuses the PUT


@dataclass(frozen=True)
class _Ticket:
    owner: str
    file_name: str
    content_type: str
    size: int


def _object_key(key: str) -> str:
    return f"uploads/{key}"


def _ticket_key(key: str) -> str:
    return f"uploads/{key}.json"


def _require_presigning(blobs: BlobStore) -> None:
    if not blobs.presigns:
        raise NotConfigured(
            "The presigned upload flow", "S3 blobs (S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY)",
            "send the files' bytes in the upload request itself instead (multipart POST /v1/images).")


def _content_type(value: object) -> str:
    accepted = sorted(MEDIA_TYPES.values())
    if not isinstance(value, str) or value.split(";")[0].strip().lower() not in accepted:
        raise InvalidRequest("content_type", f"{value!r} is not an accepted image type: {', '.join(accepted)}")
    return value.split(";")[0].strip().lower()


def _size(value: object, settings: Settings) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest("size", f"expected a whole number of bytes, got {type(value).__name__}")
    if value <= 0:
        raise InvalidRequest("size", "the file is empty; there is nothing to upload")
    if value > settings.max_upload_bytes:
        raise InvalidRequest("size", f"{value} bytes is over the {settings.max_upload_mb} MB limit (MAX_UPLOAD_MB)")
    return value


def open_slot(blobs: BlobStore, settings: Settings, owner: str, file_name: object, content_type: object,
              size: object) -> UploadSlot:
    """Check the declared file and hand out a presigned PUT URL for it (see the module docstring)."""
    _require_presigning(blobs)
    ticket = _Ticket(owner, validation.file_name(file_name), _content_type(content_type), _size(size, settings))
    key = uuid.uuid4().hex
    url = blobs.upload_url(_object_key(key), UPLOAD_URL_TTL_S) or ""  # never empty where blobs.presigns
    blobs.put(_ticket_key(key), json.dumps(asdict(ticket)).encode(), "application/json")
    return UploadSlot(key=key, url=url, method="PUT", file_name=ticket.file_name, content_type=ticket.content_type,
                      size=ticket.size, max_bytes=settings.max_upload_bytes, expires_at=time.time() + UPLOAD_URL_TTL_S)


def claim(blobs: BlobStore, settings: Settings, actor: Actor, key: object) -> tuple[str, bytes]:
    """The file name and the bytes put under ``key`` (at most ``MAX_UPLOAD_MB`` plus one byte), for
    the user who opened the slot or an admin; :class:`NotFound` for anyone else, as for no slot."""
    _require_presigning(blobs)
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise NotFound("upload", str(key))
    try:
        ticket = _Ticket(**json.loads(blobs.get(_ticket_key(key))))
    except KeyError:
        raise NotFound("upload", key, "It was never issued, or it was ingested already.") from None
    if ticket.owner != actor.name and actor.role is not Role.ADMIN:
        raise NotFound("upload", key)
    try:
        data = blobs.get(_object_key(key), limit=settings.max_upload_bytes + 1)
    except KeyError:
        raise InvalidRequest(
            "key", f"nothing was PUT to the upload URL of {key} yet; PUT the file's bytes there first "
            f"(a URL works for {UPLOAD_URL_TTL_S // 60} minutes; ask for a new one after that)") from None
    return ticket.file_name, data


def discard(blobs: BlobStore, key: str) -> None:
    """Remove an ingested upload's object and ticket."""
    blobs.delete(_object_key(key))
    blobs.delete(_ticket_key(key))
