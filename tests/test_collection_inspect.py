"""The facade calls the dashboard's pair inspector and Home rely on: where two images differ, and
how the collection grew."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from core import Collection
from core.synthetic import encode, photo


def _ids(collection: Collection, uploads: list[tuple[str, bytes]]) -> list[str]:
    report = collection.ingest_uploads(uploads)
    return [o.image_id for o in report.outcomes]


def test_pair_difference_shows_an_edit_and_nothing_for_a_mirrored_copy(collection: Collection) -> None:
    original = photo(1)
    edited = original.copy()
    edited.paste((255, 255, 255), (100, 100, 160, 160))
    mirrored = ImageOps.mirror(original)
    left, right, flipped, wide = _ids(collection, [
        ("a.png", encode(original, "PNG")), ("b.png", encode(edited, "PNG")), ("c.png", encode(mirrored, "PNG")),
        ("d.png", encode(photo(1, size=(480, 120)), "PNG"))])
    difference = np.asarray(Image.open(io.BytesIO(collection.pair_difference(left, right))))
    assert difference.shape == (240, 320, 3)
    assert difference[110:150, 110:150].mean() > 60 and difference[:80, :80].max() == 0
    assert np.asarray(Image.open(io.BytesIO(collection.pair_difference(left, flipped)))).max() == 0
    assert collection.pair_difference(left, wide) is None  # another shape: not aligned


def test_growth_counts_images_by_the_end_of_each_day(collection: Collection) -> None:
    assert collection.growth() == ()
    _ids(collection, [(f"{i}.jpg", encode(photo(i))) for i in range(3)])
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert collection.growth() == ((today, 3),)
    assert collection.labels() == {}


def test_growth_reads_arrival_times_only_and_counts_by_utc_day(collection: Collection,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The Home chart never reads every vector (a snapshot: 9 s at 100,000 images in a new process)."""
    monkeypatch.setattr(collection, "snapshot", lambda: pytest.fail("growth read a snapshot"))
    day = 20_000 * 86_400.0  # 2024-10-04 00:00 UTC
    times = np.array([day + 86_399.5, day + 5.0, day + 86_400.0, day + 3 * 86_400 + 1, day + 10.0])
    monkeypatch.setattr(collection.backends.catalog, "arrival_times", lambda: times)
    assert collection.growth() == (("2024-10-04", 3), ("2024-10-05", 4), ("2024-10-07", 5))
