"""The catalog's visible images read into what the analysis takes, a page at a time.

At a million images the sketches alone are ~0.8 GB as Python bytes, and the hashes about as much
again as Python strings; read into one frame, they all were in memory at once, beside the arrays
built from them. Here each page of :meth:`Catalog.ready_pages` is packed into arrays allocated once
for the whole collection (sketches by `sketch_arrays`, hashes as fixed-width digests and integers),
the properties into one matrix, and only the columns views show (ids, names, sources, sizes) are
kept as a frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from core.analysis import ImageSignals
from core.analysis.crops import PACKED_BYTES
from core.analysis.details import DETAIL_SIDE
from core.analysis.duplicates import DIGEST_HEX, hash_groups, hex_digests, sketch_arrays
from core.analysis.hamming import hashes_from_hex
from core.image_properties import PROPERTY_NAMES
from core.images import detail_picture
from core.storage.blobs import BlobStore, thumbnail_key
from core.storage.catalog import READY, READY_PAGE_ROWS, Catalog
from core.storage.catalog_properties import COLUMN_PREFIX

log = logging.getLogger(__name__)
DETAIL_THUMBNAIL_MAX_BYTES = 4 * 2**20  # a thumbnail is a 256-pixel JPEG: anything larger was not written by ingest

# From this many visible images the snapshot keeps its vectors in float16: a million take 1 GB
# instead of 2, which decides whether the analysis fits in 4 GB. Products still run in float32
# (`core.analysis.exact.as_float32`), but each cosine may move by up to about 1e-4, so smaller
# collections, which memory never binds, keep float32 and exact cosines.
HALF_PRECISION_MIN_IMAGES = 200_000

PROPERTY_COLUMNS = tuple(COLUMN_PREFIX + name for name in PROPERTY_NAMES)  # kept as AnalysisRows.properties
VIEW_COLUMNS = ("id", "file_name", "source", "width", "height")  # kept as AnalysisRows.frame: what views show


@dataclass(frozen=True)
class AnalysisRows:
    """Every visible image in arrival order: row i of ``frame`` is entry i of ``signals`` and row i
    of ``properties``."""

    frame: pd.DataFrame  # the catalog's VIEW_COLUMNS
    signals: ImageSignals
    properties: np.ndarray  # (n, len(PROPERTY_NAMES)) float64, NaN rows for unmeasured images


def read_analysis_rows(catalog: Catalog, page_rows: int = READY_PAGE_ROWS) -> AnalysisRows:
    """The visible images' rows and signals, read ``page_rows`` at a time (see module docstring)."""
    columns = _SignalColumns(catalog.counts()[READY])
    frame = _view_frame(catalog.ready_pages(page_rows), columns)
    # Arrow's allocator keeps what the pages freed for its next allocation: 0.13 GiB at a million
    # images, held through the whole analysis, which allocates nothing more from it.
    pa.default_memory_pool().release_unused()
    return AnalysisRows(frame, columns.signals(), columns.arrays["properties"][: columns.count])


def _view_frame(pages: Iterable[pd.DataFrame], columns: _SignalColumns) -> pd.DataFrame:
    """The VIEW_COLUMNS of every page, in one frame, as each page's signals are packed into ``columns``."""
    frames = []
    for page in pages:
        columns.add(page)
        frames.append(page[list(VIEW_COLUMNS)])
    return _one_chunk(pd.concat(frames, ignore_index=True))


def _one_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each Arrow-backed string column in one chunk. Concatenated pages leave one
    chunk per page, and views take a few rows at a time: from the 50 chunks of a million images a
    take cost 3.4 ms a column (a duplicates view of 10,000 clusters: 49 s), from one 0.3 ms."""
    arrow = [c for c in frame.columns
             if isinstance(frame[c].dtype, pd.StringDtype) and frame[c].dtype.storage == "pyarrow"]
    return frame.assign(**{c: pd.Series(_combined(pa.array(frame[c])), dtype=frame[c].dtype, index=frame.index)
                           for c in arrow})


def _combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


class _SignalColumns:
    """The signals' arrays, sized for the rows counted before reading; grown if more rows became
    visible between the count and the last page (an ingest finishing meanwhile)."""

    def __init__(self, expected: int) -> None:
        self.count = 0
        self.arrays = {
            "sha256": np.zeros(expected, dtype=f"S{DIGEST_HEX}"),
            "pixel_sha256": np.zeros(expected, dtype=f"S{DIGEST_HEX}"),
            "phash": np.zeros(expected, dtype=np.uint64),
            "phash_mirror": np.zeros(expected, dtype=np.uint64),
            "pixels": np.zeros(expected, dtype=np.int64),
            "created": np.zeros(expected, dtype=np.float64),
            "sketch": np.zeros((expected, PACKED_BYTES), dtype=np.uint8),
            "has_sketch": np.zeros(expected, dtype=bool),
            "properties": np.zeros((expected, len(PROPERTY_COLUMNS))),
        }

    def add(self, page: pd.DataFrame) -> None:
        end = self.count + len(page)
        if end > len(self.arrays["phash"]):
            self.arrays = {name: _grown(a, end) for name, a in self.arrays.items()}
        rows = slice(self.count, end)
        a = self.arrays
        a["sha256"][rows] = hex_digests(page["sha256"].tolist())
        a["pixel_sha256"][rows] = hex_digests(page["pixel_sha256"].tolist())
        a["phash"][rows] = hashes_from_hex(page["phash"].tolist())
        a["phash_mirror"][rows] = hashes_from_hex(page["phash_mirror"].tolist())
        a["pixels"][rows] = page["width"].to_numpy(np.int64) * page["height"].to_numpy(np.int64)
        a["created"][rows] = page["created_at"].to_numpy(np.float64)
        a["sketch"][rows], a["has_sketch"][rows] = sketch_arrays(page["sketch"].tolist())
        a["properties"][rows] = page[list(PROPERTY_COLUMNS)].to_numpy(np.float64, na_value=np.nan)
        self.count = end

    def signals(self) -> ImageSignals:
        a = {name: array[: self.count] for name, array in self.arrays.items() if name != "properties"}
        return ImageSignals(bytes_group=hash_groups(a["sha256"]), pixels_group=hash_groups(a["pixel_sha256"]),
                            phash=a["phash"], phash_mirror=a["phash_mirror"], pixels=a["pixels"],
                            created=a["created"], sketch=a["sketch"], has_sketch=a["has_sketch"])


def vector_dtype(images: int) -> type[np.floating]:
    """The dtype the snapshot holds ``images`` vectors in (see `HALF_PRECISION_MIN_IMAGES`)."""
    return np.float16 if images >= HALF_PRECISION_MIN_IMAGES else np.float32


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    grown = np.zeros((max(rows, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def detail_pictures(blobs: BlobStore, ids: Sequence[str], max_bytes: int = DETAIL_THUMBNAIL_MAX_BYTES,
                    workers: int = 8) -> np.ndarray:
    """(len(ids), DETAIL_SIDE, DETAIL_SIDE) uint8: each image's stored thumbnail as the grey picture
    `core.analysis.details` compares; all zeros (flat: not compared) where the thumbnail is missing
    or unreadable (`repair` restores it). Fetched by a few threads, since on S3 each is a round trip."""
    def one(image_id: str) -> np.ndarray | None:
        try:
            return detail_picture(blobs.get(thumbnail_key(image_id), limit=max_bytes), DETAIL_SIDE)
        except (KeyError, OSError, ValueError, Image.DecompressionBombError):
            return None

    out = np.zeros((len(ids), DETAIL_SIDE, DETAIL_SIDE), dtype=np.uint8)
    missing = 0
    with ThreadPoolExecutor(max(1, min(workers, len(ids)))) as pool:
        for i, picture in enumerate(pool.map(one, ids)):
            if picture is None:
                missing += 1
            else:
                out[i] = picture
    if missing:
        log.warning("%d of %d thumbnails could not be read; their pairs are judged without a close look "
                    "(run repair to restore them)", missing, len(ids))
    return out
