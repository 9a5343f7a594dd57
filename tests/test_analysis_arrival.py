"""The on-arrival check: exact, near or no duplicate of what is stored, with the collection's scale."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from core.analysis.arrival import ArrivalCheck, StoredImage, check_arrival, hash_matches
from core.analysis.details import DETAIL_SIDE
from core.analysis.duplicates import DuplicateThresholds
from core.analysis.hamming import hashes_from_hex
from core.analysis.similarity import SimilarityScale
from core.images import PreparedImage, detail_picture, prepare_image
from core.synthetic import save_as
from tests.drawings import badge, folder_icon

COSINE = DuplicateThresholds(similarity=0.95)  # the embedding signal on (it is off by default)
SCALE = SimilarityScale(reference_cosine=0.8, reference_rank=10, histogram_edges=(), histogram_counts=())
NEW = {"sha256": "new", "pixel_sha256": "newpix", "phash": "00000000ffffffff", "phash_mirror": "ffffffff00000000",
       "sketch": None}


def stored(image_id: str, cosine: float, *, sha: str = "other", pix: str | None = "otherpix",
           phash: str = "123456789abcdef0", mirror: str = "0fedcba987654321",
           sketch: bytes | None = None) -> StoredImage:
    return StoredImage(image_id, cosine, sha, pix, phash, mirror, sketch)


def test_same_bytes_beat_same_pixels_and_near_matches() -> None:
    check = check_arrival(**NEW, scale=SCALE, stored=[
        stored("near", 0.999), stored("pixels", 0.95, pix="newpix"), stored("bytes", 0.9, sha="new")])
    assert (check.verdict, check.image_id) == ("exact", "bytes")
    assert "same_bytes" in check.signals


def test_same_pixels_is_exact() -> None:
    check = check_arrival(**NEW, scale=SCALE, stored=[stored("near", 0.999), stored("pixels", 0.95, pix="newpix")])
    assert (check.verdict, check.image_id, check.signals[0]) == ("exact", "pixels", "same_pixels")


def test_flipped_copy_found_by_hash_even_without_a_cosine() -> None:
    check = check_arrival(**NEW, scale=SCALE, stored=[
        stored("flipped", math.nan, phash="ffffffff00000001"), stored("unrelated", 0.85)])
    assert (check.verdict, check.image_id, check.phash_distance, check.mirrored) == ("near", "flipped", 1, True)
    assert check.signals == ("phash",)


def test_near_by_calibrated_cosine_uses_the_collection_scale() -> None:
    # similarity = 1 - (1 - cos) / (1 - 0.8): cosine 0.995 is 0.975 on the scale, 0.97 only 0.85
    close = check_arrival(**NEW, scale=SCALE, stored=[stored("a", 0.995)], thresholds=COSINE)
    loose = check_arrival(**NEW, scale=SCALE, stored=[stored("a", 0.97)], thresholds=COSINE)
    assert close.verdict == "near" and close.similarity == np.float64(1 - 0.005 / 0.2)
    assert loose.verdict == "none"
    assert check_arrival(**NEW, scale=SCALE, stored=[stored("a", 0.97)],
                         thresholds=DuplicateThresholds(similarity=0.8)).verdict == "near"


def test_no_match_names_the_closest_stored_image() -> None:
    check = check_arrival(**NEW, scale=SCALE, stored=[stored("far", 0.5), stored("closer", 0.9)])
    assert (check.verdict, check.image_id, check.signals) == ("none", "closer", ())


def test_empty_collection() -> None:
    check = check_arrival(**NEW, scale=SCALE, stored=[])
    assert check.verdict == "none" and check.image_id is None


def test_hash_matches_searches_every_stored_hash_mirrors_included() -> None:
    rng = np.random.default_rng(0)
    phashes = rng.integers(0, 2**63, size=1000, dtype=np.int64).astype(np.uint64)
    mirrors = rng.integers(0, 2**63, size=1000, dtype=np.int64).astype(np.uint64)
    query = int(phashes[500]) ^ (0b111 << 61)  # 3 bits apart, in the first hex digit
    mirrors[20] = np.uint64(query ^ 1)
    positions, distances = hash_matches(f"{query:016x}", "0000000000000000", phashes, mirrors, 4)
    assert positions.tolist() == [20, 500] and distances.tolist() == [1, 3]
    assert hashes_from_hex([f"{query:016x}"])[0] == query


def test_an_arrival_twenty_pHash_bits_away_is_near_by_sketch_only_once_looked_at_closely() -> None:
    """The `sketch` signal needs a close look, so the arrival check asks for the pictures of the
    stored images it would accept were the look to agree: a copy then joins, a sibling does not."""
    def prepared(img: Image.Image) -> PreparedImage:
        return prepare_image(save_as(img, "PNG"), max_bytes=10 << 20, max_pixels=10**8)

    new = prepared(folder_icon("note"))
    lost = (1 << 20) - 1  # the stored hashes 20 bits from the arrival's, as brightened transparent line art loses them
    stored_ones = {"copy": prepared(folder_icon("note").resize((160, 160), Image.Resampling.LANCZOS)),
                   "sibling": prepared(folder_icon("fox"))}
    no_crops = DuplicateThresholds(crop=1.0)  # the windows would match the true hashes
    asked: list[list[str]] = []

    def pictures(ids: list[str]) -> np.ndarray:
        asked.append(ids)
        return np.stack([detail_picture(stored_ones[i].thumbnail, DETAIL_SIDE) for i in ids])

    def check(name: str, look: bool) -> ArrivalCheck:
        s = stored_ones[name]
        far = StoredImage(name, 0.99, s.sha256, s.pixel_sha256, f"{int(new.phash, 16) ^ lost:016x}",
                          f"{int(new.phash_mirror, 16) ^ lost:016x}", s.sketch)
        return check_arrival(sha256=new.sha256, pixel_sha256=new.pixel_sha256, phash=new.phash,
                             phash_mirror=new.phash_mirror, sketch=new.sketch, stored=[far], scale=SCALE,
                             thresholds=no_crops, picture=(lambda: detail_picture(new.thumbnail, DETAIL_SIDE))
                             if look else None, pictures=pictures if look else None)

    assert check("copy", look=False).verdict == "none"
    near = check("copy", look=True)
    assert (near.verdict, near.image_id, near.phash_distance, near.signals) == ("near", "copy", 20, ("sketch",))
    assert check("sibling", look=True).verdict == "none"
    assert asked == [["copy"], ["sibling"]]


def test_an_arrival_sharing_only_a_silhouette_with_a_stored_image_is_refused_by_its_fine_details() -> None:
    def prepared(img: Image.Image) -> PreparedImage:
        return prepare_image(save_as(img, "PNG"), max_bytes=10 << 20, max_pixels=10**8)

    knob, dice = prepared(badge("knob")), prepared(badge("dice"))
    scale = SimilarityScale(reference_cosine=0.5, reference_rank=10, histogram_edges=(), histogram_counts=())
    stored_dice = StoredImage("dice", math.nan, dice.sha256, dice.pixel_sha256, dice.phash, dice.phash_mirror,
                              dice.sketch)

    def check(look: bool) -> ArrivalCheck:
        return check_arrival(sha256=knob.sha256, pixel_sha256=knob.pixel_sha256, phash=knob.phash,
                             phash_mirror=knob.phash_mirror, sketch=knob.sketch, stored=[stored_dice], scale=scale,
                             picture=(lambda: detail_picture(knob.thumbnail, DETAIL_SIDE)) if look else None,
                             pictures=lambda ids: np.stack([detail_picture(dice.thumbnail, DETAIL_SIDE)] * len(ids)))

    assert (check(look=False).verdict, check(look=False).signals) == ("near", ("phash",))  # hashes and sketch agree
    assert check(look=True).verdict == "none"
