"""The analysis reads the catalog a page at a time into its arrays, and gets what one frame gave."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core.analysis import ImageSignals
from core.analysis_inputs import VIEW_COLUMNS, read_analysis_rows
from core.image_properties import PROPERTY_NAMES, ImageProperties
from core.storage.catalog import Catalog, ImageRecord, sqlite_url

pytest_plugins = ("fixtures_servers",)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    url = sqlite_url(tmp_path / "catalog.sqlite3") if request.param == "sqlite" else request.getfixturevalue(
        "postgres_url")
    opened = Catalog(url)
    try:
        yield opened
    finally:
        opened.close()


def _record(n: int) -> ImageRecord:
    sha = hashlib.sha256(f"image {n}".encode()).hexdigest()
    pixels = hashlib.sha256(f"pixels {n % 4}".encode()).hexdigest()  # every 4th image has the same pixels
    return ImageRecord(
        id=str(uuid.UUID(sha[:32])), sha256=sha, pixel_sha256=pixels, phash=f"{n * 977:016x}",
        phash_mirror=f"{n * 131:016x}", dhash="0" * 16, width=100 + n, height=80, format="PNG", size_bytes=n,
        file_name=f"img{n}.png", source="s", uploader="u", created_at=1_700_000_000.0 + n // 3,
        sketch=bytes([n]) * 768 if n % 5 else None, state="pending",
    )


def _properties(n: int) -> ImageProperties:
    return ImageProperties(**{name: (100 + n if name in ("width", "pixels") else n / 7 + j)
                              for j, name in enumerate(PROPERTY_NAMES)})


def _fill(catalog: Catalog, count: int) -> list[ImageRecord]:
    records = [_record(n) for n in range(count)]
    # every third image unmeasured (as before a repair): a NaN row
    catalog.add_pending(records, [], properties={r.id: _properties(n) for n, r in enumerate(records) if n % 3})
    catalog.mark_ready([r.id for r in records])
    return records


def _assert_same_signals(found: ImageSignals, expected: ImageSignals) -> None:
    for name in ("phash", "phash_mirror", "pixels", "created", "sketch", "has_sketch"):
        np.testing.assert_array_equal(getattr(found, name), getattr(expected, name), err_msg=name)
    for name in ("bytes_group", "pixels_group"):  # the same partition, whatever the numbers
        a, b = getattr(found, name), getattr(expected, name)
        assert all((a == a[i]).tolist() == (b == b[i]).tolist() for i in range(len(a))), name


def test_paged_rows_match_the_whole_frame(catalog: Catalog) -> None:
    number = {r.id: n for n, r in enumerate(_fill(catalog, 23))}
    frame = catalog.ready_frame()
    rows = read_analysis_rows(catalog, page_rows=5)
    # no sketch held as bytes, no hash as text, no property twice: only what views show
    assert rows.frame.equals(frame[list(VIEW_COLUMNS)]) and list(rows.frame.columns) == list(VIEW_COLUMNS)
    # text columns in one Arrow chunk, not one per page: views take a few rows at a time from them
    for c in ("id", "file_name", "source"):
        column = pa.array(rows.frame[c])
        assert isinstance(column, pa.Array) or column.num_chunks == 1, c
    expected = np.array([[np.nan] * len(PROPERTY_NAMES) if n % 3 == 0 else
                         [getattr(_properties(n), name) for name in PROPERTY_NAMES]
                         for n in (number[i] for i in rows.frame["id"])])
    np.testing.assert_array_equal(rows.properties, expected)
    assert read_analysis_rows(catalog).frame.equals(rows.frame)  # one page: already one chunk
    _assert_same_signals(rows.signals, ImageSignals.from_columns(
        sha256=frame["sha256"].tolist(), pixel_sha256=frame["pixel_sha256"].tolist(), phash=frame["phash"].tolist(),
        phash_mirror=frame["phash_mirror"].tolist(), width=frame["width"].tolist(), height=frame["height"].tolist(),
        created=frame["created_at"].tolist(), sketch=frame["sketch"].tolist()))
    assert rows.signals.has_sketch.sum() == 23 - 5  # images 0, 5, 10, 15, 20 have none


def test_rows_made_visible_after_the_count_are_read_too(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _fill(catalog, 12)
    real_counts = catalog.counts
    monkeypatch.setattr(catalog, "counts", lambda: {**real_counts(), "ready": 3})  # as if 9 arrived since
    rows = read_analysis_rows(catalog, page_rows=5)
    assert rows.frame["id"].tolist() == catalog.ready_frame()["id"].tolist()
    assert len(rows.signals) == len(records) and rows.signals.sketch.shape == (12, rows.signals.sketch.shape[1])


def test_an_empty_catalog_gives_no_rows(catalog: Catalog) -> None:
    rows = read_analysis_rows(catalog)
    assert len(rows.frame) == 0 and len(rows.signals) == 0 and "file_name" in rows.frame.columns
