"""Crops: a sub-window of one image found in another, on real pixels with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.analysis.arrival import (
    ARRIVAL_NEIGHBOURS,
    StoredImage,
    arrival_neighbour_count,
    arrival_proposals,
    check_arrival,
    crop_candidates_for,
)
from core.analysis.crops import (
    DEFAULT_CROP_MATCH,
    EXHAUSTIVE_MAX_N,
    PACKED_BYTES,
    WINDOWS,
    _closest_block,
    colour,
    contained,
    containing,
    crop_candidates,
    crop_matches,
    grey,
    pack_sketches,
    verify_crops,
    window_hashes,
)
from core.analysis.duplicates import (
    DuplicateThresholds,
    ImageSignals,
    duplicate_candidates,
    duplicate_clusters,
    sketch_arrays,
)
from core.analysis.hamming import hashes_from_hex, popcount
from core.analysis.neighbours import DEFAULT_K, exact_graph
from core.analysis.similarity import SimilarityScale
from core.errors import InvalidRequest
from core.images import PreparedImage, prepare_image
from core.synthetic import encode, photo

SIZE = (320, 240)


def prepared(image: Image.Image) -> PreparedImage:
    return prepare_image(encode(image, "PNG"), max_bytes=1 << 26, max_pixels=1 << 26)


def crop_box(fraction_x: float, fraction_y: float, at_x: float, at_y: float) -> tuple[int, int, int, int]:
    w, h = int(SIZE[0] * fraction_x), int(SIZE[1] * fraction_y)
    x0, y0 = int((SIZE[0] - w) * at_x), int((SIZE[1] - h) * at_y)
    return x0, y0, x0 + w, y0 + h


def sketches(images: list[PreparedImage]) -> np.ndarray:
    return sketch_arrays([p.sketch for p in images])[0]


def phashes(images: list[PreparedImage]) -> np.ndarray:
    return hashes_from_hex([p.phash for p in images])


def mirrors(images: list[PreparedImage]) -> np.ndarray:
    return hashes_from_hex([p.phash_mirror for p in images])


@pytest.fixture(scope="module")
def scene() -> list[PreparedImage]:
    """Rows: 0-5 unrelated photos; 6 a crop of 0 (82% x 85%, right/bottom); 7 a crop of 3 (80%, top left)."""
    originals = [photo(seed, SIZE) for seed in range(6)]
    crops = [originals[0].crop(crop_box(0.82, 0.85, 0.9, 0.7)), originals[3].crop(crop_box(0.8, 0.8, 0.1, 0.0))]
    return [prepared(i) for i in originals + crops]


def test_packed_sketch_keeps_luma_and_colour_in_half_the_bytes() -> None:
    rgb = np.stack([np.frombuffer(prepared(photo(seed, SIZE)).sketch, dtype=np.uint8).reshape(16, 16, 3)
                    for seed in range(3)])
    packed = pack_sketches(rgb)
    assert packed.shape == (3, PACKED_BYTES) and PACKED_BYTES == 384
    luma = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in rgb])
    assert np.abs(grey(packed).numpy() - luma).max() <= 1  # Pillow's own "L" conversion
    blocks = rgb.reshape(3, 8, 2, 8, 2, 3).mean(axis=(2, 4)).repeat(2, axis=1).repeat(2, axis=2)
    restored = colour(pack_sketches(np.rint(blocks).astype(np.uint8))).permute(0, 2, 3, 1).numpy()
    assert np.abs(restored - np.rint(blocks)).max() <= 3  # exact up to rounding where each 2 x 2 block agrees
    assert np.abs(colour(packed).permute(0, 2, 3, 1).numpy() - rgb).mean() < 8


def test_unpacked_sketches_are_refused_with_a_clear_error(scene: list[PreparedImage]) -> None:
    rgb = np.stack([np.frombuffer(p.sketch, dtype=np.uint8).reshape(16, 16, 3) for p in scene])
    with pytest.raises(ValueError, match="pack_sketches"):
        window_hashes(rgb)


def test_window_hash_is_the_phash_of_that_window_cropped() -> None:
    original = photo(11, SIZE)
    index = WINDOWS.index((0.88, 0.78, 2 / 3, 1 / 3))
    sx, sy, px, py = WINDOWS[index]
    cropped = prepared(original.crop(crop_box(sx, sy, px, py)))
    windows = window_hashes(sketches([prepared(original)]))[0]
    distance = popcount(windows ^ hashes_from_hex([cropped.phash])[0])
    assert distance[index] <= 6  # the sketch is 16 px, so a few bits differ from the full-resolution pHash
    assert distance[index] == distance.min()


def test_crops_are_found_and_verified_and_unrelated_photos_are_not(scene: list[PreparedImage]) -> None:
    found = crop_matches(sketches(scene), phashes(scene), mirrors(scene), np.ones(len(scene), dtype=bool))
    strong = {(int(o), int(i)) for o, i, s in zip(found.outer, found.inner, found.score, strict=True) if s >= DEFAULT_CROP_MATCH}
    assert strong == {(0, 6), (3, 7)}
    window = found.window[(found.outer == 0) & (found.inner == 6)][0]
    assert window[0] == pytest.approx(0.82, abs=0.06) and window[1] == pytest.approx(0.85, abs=0.06)


def test_given_pairs_give_the_same_candidates_as_the_exhaustive_search(scene: list[PreparedImage]) -> None:
    every = crop_candidates(sketches(scene), phashes(scene), 16)
    a, b = np.triu_indices(len(scene), 1)
    listed = crop_candidates(sketches(scene), phashes(scene), 16, pairs=(a, b))
    assert sorted(zip(*(x.tolist() for x in every), strict=True)) == sorted(zip(*(x.tolist() for x in listed),
                                                                               strict=True))
    n = len(scene)
    table = np.array([[j for j in range(n) if j != i] + [-1] for i in range(n)], dtype=np.int32)
    from_table = crop_candidates(sketches(scene), phashes(scene), 16, partners=table)  # mutual: tried once per order
    assert sorted(zip(*(x.tolist() for x in every), strict=True)) == sorted(zip(*(x.tolist() for x in from_table),
                                                                               strict=True))
    one_sided = np.full((n, 1), -1, dtype=np.int32)
    one_sided[6, 0] = 0  # 6 lists 0, 0 lists nothing: both orders are still tried
    outer, inner, _, _ = crop_candidates(sketches(scene), phashes(scene), 16, partners=one_sided)
    expected = {(o, i) for o, i in zip(every[0].tolist(), every[1].tolist(), strict=True) if {o, i} == {0, 6}}
    assert len(expected) == 2 and set(zip(outer.tolist(), inner.tolist(), strict=True)) == expected
    only = crop_candidates(sketches(scene), phashes(scene), 16, pairs=(np.array([1]), np.array([2])))
    assert set(only[0].tolist()) <= {1, 2}


def test_images_without_a_sketch_take_no_part(scene: list[PreparedImage]) -> None:
    present = np.ones(len(scene), dtype=bool)
    present[6] = False
    found = crop_matches(sketches(scene), phashes(scene), mirrors(scene), present)
    assert 6 not in found.outer and 6 not in found.inner and ((found.outer == 3) & (found.inner == 7)).any()


def signals_of(images: list[PreparedImage]) -> ImageSignals:
    return ImageSignals.from_columns(
        sha256=[p.sha256 for p in images], pixel_sha256=[p.pixel_sha256 for p in images],
        phash=[p.phash for p in images], phash_mirror=[p.phash_mirror for p in images],
        width=[p.width for p in images], height=[p.height for p in images], sketch=[p.sketch for p in images])


def vectors_for(n: int, seed: int = 0) -> np.ndarray:
    """Unrelated unit vectors: the embedding says nothing, so only pixels can tie a crop to its original."""
    v = np.random.default_rng(seed).standard_normal((n, 16))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("exhaustive_max_n", [10_000, 0])
def test_crop_joins_its_original_in_a_cluster_under_the_crop_threshold(scene: list[PreparedImage],
                                                                       exhaustive_max_n: int) -> None:
    x = vectors_for(len(scene))
    signals = signals_of(scene)
    # with the exhaustive search off, crops are looked for among graph edges: k covers every pair here
    candidates = duplicate_candidates(exact_graph(x, len(scene) - 1), x, signals,
                                      crop_exhaustive_max_n=exhaustive_max_n)
    report = duplicate_clusters(candidates, x, signals)
    clusters = {c.members for c in report.clusters}
    assert clusters == {(0, 6), (3, 7)}
    cluster = next(c for c in report.clusters if c.members == (0, 6))
    assert cluster.signals_to_representative[1] == ("crop",)
    assert cluster.links[0].crop_score is not None and cluster.links[0].crop_score >= DEFAULT_CROP_MATCH
    off = duplicate_clusters(candidates, x, signals, DuplicateThresholds(crop=1.01))
    assert not off.clusters
    with pytest.raises(InvalidRequest, match="crop"):
        duplicate_clusters(candidates, x, signals, DuplicateThresholds(crop=0.5))


def test_crop_search_beyond_the_exhaustive_size_misses_crops_outside_the_graph(scene: list[PreparedImage]) -> None:
    x = vectors_for(len(scene), seed=3)
    signals = signals_of(scene)
    graph = exact_graph(x, 1)
    neighbours_of = {i: set(graph.indices[i].tolist()) for i in range(len(scene))}
    linked = {(a, b) for a, b in ((0, 6), (3, 7)) if b in neighbours_of[a] or a in neighbours_of[b]}
    candidates = duplicate_candidates(graph, x, signals, crop_exhaustive_max_n=0)
    found = {(int(a), int(b)) for a, b, s in zip(candidates.left, candidates.right, candidates.crop_score,
                                                 strict=True) if s >= DEFAULT_CROP_MATCH}
    assert found == linked


def stored_image(image_id: str, p: PreparedImage) -> StoredImage:
    return StoredImage(image_id, float("nan"), p.sha256, p.pixel_sha256, p.phash, p.phash_mirror, p.sketch)


def test_arrival_calls_a_crop_of_a_stored_image_a_near_duplicate_either_way_round(scene: list[PreparedImage]) -> None:
    scale = SimilarityScale(reference_cosine=0.5, reference_rank=10, histogram_edges=(), histogram_counts=())

    def arrive(new: PreparedImage, stored: list[tuple[str, PreparedImage]]):
        return check_arrival(sha256=new.sha256, pixel_sha256=new.pixel_sha256, phash=new.phash,
                             phash_mirror=new.phash_mirror, sketch=new.sketch,
                             stored=[stored_image(i, p) for i, p in stored], scale=scale)

    as_crop = arrive(scene[6], [("a", scene[1]), ("original", scene[0])])
    assert (as_crop.verdict, as_crop.image_id, as_crop.signals) == ("near", "original", ("crop",))
    as_original = arrive(scene[0], [("crop", scene[6]), ("b", scene[2])])
    assert (as_original.verdict, as_original.image_id) == ("near", "crop")
    assert arrive(scene[4], [("crop", scene[6])]).verdict == "none"
    # candidates either way round, from window hashes, however far the whole pHashes are
    stored = [scene[1], scene[2], scene[6]]
    assert 2 in crop_candidates_for(scene[0].sketch, scene[0].phash, scene[0].phash_mirror, phashes(stored),
                                    mirrors(stored), window_hashes(sketches(stored)))
    assert 0 in crop_candidates_for(scene[6].sketch, scene[6].phash, scene[6].phash_mirror, phashes(scene[:2]),
                                    mirrors(scene[:2]), window_hashes(sketches(scene[:2])))
    # beyond the exhaustive size no windows are scanned: the pHash matches alone are proposed
    stored += [scene[0]]
    for windows, crops in ((window_hashes(sketches(stored)), {2}), (None, set())):
        rows, found = arrival_proposals(scene[0].sketch, scene[0].phash, scene[0].phash_mirror, phashes(stored),
                                        mirrors(stored), windows, 16)
        assert crops <= set(found.tolist()) and (windows is not None or len(found) == 0)
        assert rows[0] == 3  # the same picture, 0 bits away
    assert (arrival_neighbour_count(EXHAUSTIVE_MAX_N), arrival_neighbour_count(EXHAUSTIVE_MAX_N + 1)) == (
        ARRIVAL_NEIGHBOURS, DEFAULT_K)


def test_pairs_that_fail_the_first_screen_keep_their_starting_score(scene: list[PreparedImage]) -> None:
    unrelated = verify_crops(sketches(scene), np.array([1, 2]), np.array([4, 5]), np.array([0, 5]))
    assert len(unrelated) == 2 and (unrelated.score < DEFAULT_CROP_MATCH).all()
    assert len(verify_crops(sketches(scene), np.array([], dtype=np.int32), np.array([], dtype=np.int32),
                            np.array([], dtype=np.int16))) == 0


def test_the_same_picture_re_encoded_is_a_candidate_but_not_called_a_crop() -> None:
    picture = photo(0, SIZE)
    same = [prepared(picture), prepare_image(encode(picture, "JPEG", quality=90), max_bytes=1 << 26,
                                             max_pixels=1 << 26)]
    assert len(crop_candidates(sketches(same), phashes(same))[0]) >= 1  # like a window of the other: a candidate
    assert len(crop_matches(sketches(same), phashes(same), mirrors(same), np.ones(2, dtype=bool))) == 0


def test_a_flipped_crop_is_found_verified_and_judged_on_arrival(scene: list[PreparedImage]) -> None:
    original = photo(21, SIZE)
    flipped_crop = prepared(ImageOps.mirror(original.crop(crop_box(0.8, 0.85, 0.2, 0.6))))
    images = [prepared(original), flipped_crop, *scene[1:4]]
    found = crop_matches(sketches(images), phashes(images), mirrors(images), np.ones(len(images), dtype=bool))
    strong = found.score >= DEFAULT_CROP_MATCH
    assert {(int(o), int(i)) for o, i in zip(found.outer[strong], found.inner[strong], strict=True)} == {(0, 1)}
    assert found.mirrored[strong].all()
    # without the mirrored hashes the window test misses it: the flip is what makes it a candidate
    assert (0, 1) not in set(zip(*(c.tolist() for c in crop_candidates(sketches(images), phashes(images))[:2]),
                                 strict=True))
    listed = crop_matches(sketches(images), phashes(images), mirrors(images), np.ones(len(images), dtype=bool),
                          pairs=(np.array([1]), np.array([0])), exhaustive_max_n=0)
    assert listed.score[(listed.outer == 0) & (listed.inner == 1)][0] >= DEFAULT_CROP_MATCH
    scale = SimilarityScale(reference_cosine=0.5, reference_rank=10, histogram_edges=(), histogram_counts=())
    check = check_arrival(sha256=flipped_crop.sha256, pixel_sha256=flipped_crop.pixel_sha256,
                          phash=flipped_crop.phash, phash_mirror=flipped_crop.phash_mirror, sketch=flipped_crop.sketch,
                          stored=[stored_image("original", images[0]), stored_image("other", images[2])], scale=scale)
    assert (check.verdict, check.image_id, check.signals) == ("near", "original", ("crop",))
    assert 0 in crop_candidates_for(flipped_crop.sketch, flipped_crop.phash, flipped_crop.phash_mirror,
                                    phashes(images[:1] + images[2:]), mirrors(images[:1] + images[2:]),
                                    window_hashes(sketches(images[:1] + images[2:])))


def test_closest_windows_match_a_direct_count_ties_going_to_the_first_window() -> None:
    """The window search every crop check runs on (one image against a collection, a collection
    against one image, blocks against blocks), against popcounts taken one by one."""
    rng = np.random.default_rng(3)
    windows = rng.integers(0, 2**63, (5, len(WINDOWS)), dtype=np.uint64)
    windows[1, 7] = windows[1, 40]  # equal windows: the first one is reported
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    hashes[:40] = windows[rng.integers(0, 5, 40), rng.integers(0, len(WINDOWS), 40)] ^ np.uint64(0b1011)
    hashes[40] = windows[1, 40]
    every = popcount(windows[:, :, None] ^ hashes[None, None, :])  # (rows, W, n)
    for rows in (slice(0, 1), slice(0, 5)):
        distance, window = _closest_block(windows[rows], hashes)
        np.testing.assert_array_equal(distance, every[rows].min(axis=1))
        np.testing.assert_array_equal(window, every[rows].argmin(axis=1))  # argmin: the first of equals
    assert _closest_block(windows[1:2], hashes)[1][0, 40] == 7
    mirrors = hashes[::-1].copy()
    near = np.minimum(every[0], popcount(windows[0][:, None] ^ mirrors[None, :])).min(axis=0) <= 12
    np.testing.assert_array_equal(contained(windows[0], hashes, mirrors, radius=12), np.flatnonzero(near))
    own, own_mirror = int(hashes[3]), int(hashes[5])
    holds = np.minimum(popcount(windows ^ np.uint64(own)), popcount(windows ^ np.uint64(own_mirror))).min(axis=1) <= 12
    np.testing.assert_array_equal(containing(windows, own, own_mirror, radius=12), np.flatnonzero(holds))
