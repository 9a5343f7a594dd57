"""Synthetic images written straight into a collection's stores (no files to decode, no encoder).

Catalog rows (hashes, size, sketch, names), vectors from `benchmarks.dataset_vectors`, and, where
a caller renders pages, one small thumbnail and original per image: what ingest would have stored,
so the facade's own analysis path can be measured at sizes no benchmark could embed.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from benchmarks.dataset_vectors import SyntheticCollection
from core.collection import Collection
from core.images import image_id
from core.ingest import payload
from core.storage.blobs import original_key, thumbnail_key
from core.storage.catalog import ImageName, ImageRecord

CHUNK = 5000
SOURCES = ("camera-a", "camera-b", "scanner", "web", "archive")


def write_synthetic(collection: Collection, synthetic: SyntheticCollection, data_dir: Path, *,
                    picture: bytes | None = None, index: bool = True) -> None:
    """Store every row of `synthetic` as a ready image, its sketch included; with `picture`, also
    as each image's thumbnail and original (pages show them; the duplicate analysis reads the
    thumbnails of the pairs whose sketches agree, and judges them without where missing). With
    `index`, the vector index is built as ingest would build it (search uses it; analysis reads
    every vector by a scan and never does)."""
    n = len(synthetic.vectors)
    start = time.time() - n * 60
    stores = collection.backends
    for s in range(0, n, CHUNK):
        rows = range(s, min(n, s + CHUNK))
        records = []
        for row in rows:
            sha = hashlib.sha256(f"{data_dir}:{row}".encode()).hexdigest()
            records.append(ImageRecord(
                id=image_id(sha), sha256=sha, pixel_sha256=sha, phash=f"{int(synthetic.phash[row]):016x}",
                phash_mirror=f"{int(synthetic.phash_mirror[row]):016x}", dhash="0" * 16, width=320, height=240,
                format="JPEG", size_bytes=len(picture or b""), file_name=f"synthetic_{row:07d}.jpg",
                source=SOURCES[row % len(SOURCES)], uploader="bench", created_at=start + row * 60,
                sketch=synthetic.sketch[row].tobytes()))
        ids = [r.id for r in records]
        stores.catalog.add_pending(records, [ImageName(r.id, r.file_name, r.source, r.uploader, r.created_at)
                                             for r in records])
        if picture is not None:
            for key in ids:
                stores.blobs.put(thumbnail_key(key), picture, "image/jpeg")
                stores.blobs.put(original_key(key), picture, "image/jpeg")
        stores.vectors.upsert(ids, synthetic.vectors[rows.start:rows.stop],
                              [payload(r, [r.source], [r.uploader]) for r in records])
        stores.catalog.mark_ready(ids)
    stores.vectors.flush()
    if index:
        collection._index_if_grown()
