"""Exact and near duplicates on small constructed collections with known answers."""

from __future__ import annotations

import itertools
import pickle
from dataclasses import replace

import numpy as np
import pytest

from core.analysis.duplicates import (
    DEFAULT_THRESHOLDS,
    DuplicateThresholds,
    ImageSignals,
    duplicate_candidates,
    duplicate_clusters,
    duplicate_pairs,
    judge_pairs,
    neighbour_scores,
    threshold_examples,
)
from core.analysis.hamming import distances_to, hashes_from_hex, pairs_within, popcount, search_plan
from core.analysis.neighbours import exact_graph
from core.analysis.similarity import similarity_scale
from core.errors import InvalidRequest

D = 32


COSINE = DuplicateThresholds(similarity=0.95)  # the embedding signal on (it is off by default)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def hexes(values: np.ndarray) -> list[str]:
    return [f"{int(v):016x}" for v in values]


class Collection:
    """Vectors and signals built row by row; unrelated filler rows keep the similarity scale sane."""

    def __init__(self, filler: int = 60, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.vectors: list[np.ndarray] = []
        self.sha: list[str] = []
        self.pix: list[str] = []
        self.ph: list[int] = []
        self.pm: list[int] = []
        self.size: list[tuple[int, int]] = []
        for _ in range(filler):
            self.add(self.rng.standard_normal(D))

    def add(self, vector: np.ndarray, *, sha: str | None = None, pix: str | None = None, ph: int | None = None,
            pm: int | None = None, size: tuple[int, int] = (100, 100)) -> int:
        row = len(self.vectors)
        self.vectors.append(unit(vector))
        self.sha.append(sha or f"sha{row}")
        self.pix.append(pix or f"pix{row}")
        self.ph.append(int(self.rng.integers(0, 2**63)) if ph is None else ph)
        self.pm.append(int(self.rng.integers(0, 2**63)) if pm is None else pm)
        self.size.append(size)
        return row

    def build(self, thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS, k: int = 10):
        x = np.stack(self.vectors)
        signals = ImageSignals.from_columns(
            sha256=self.sha, pixel_sha256=self.pix, phash=hexes(np.array(self.ph, dtype=np.uint64)),
            phash_mirror=hexes(np.array(self.pm, dtype=np.uint64)),
            width=[s[0] for s in self.size], height=[s[1] for s in self.size])
        candidates = duplicate_candidates(exact_graph(x, k), x, signals)
        return x, signals, candidates, duplicate_clusters(candidates, x, signals, thresholds)


def near(v: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    return unit(v) + noise * rng.standard_normal(D) / np.sqrt(D)


def cluster_of(report, row: int) -> tuple[int, ...]:
    return next((c.members for c in report.clusters if row in c.members), ())


# Hamming search ---------------------------------------------------------------------------------

def test_hamming_search_finds_pairs_differing_in_the_first_hex_digits() -> None:
    rng = np.random.default_rng(0)
    ph = rng.integers(0, 2**63, size=400, dtype=np.int64).astype(np.uint64)
    pm = rng.integers(0, 2**63, size=400, dtype=np.int64).astype(np.uint64)
    ph[1] = ph[0] ^ np.uint64(0xF0F0_0000_0000_0000)  # 8 bits, all in the first four hex digits
    left, right, distance, _ = pairs_within(ph, pm, 8)
    assert (0, 1) in set(zip(left.tolist(), right.tolist(), strict=True))
    assert distance[(left == 0) & (right == 1)][0] == 8


def skewed_hashes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes in tight families (as real collections give), mirrors partly near their own hash."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=n // 20, dtype=np.int64).astype(np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=(n, 6)).astype(np.uint64)
    ph = base[rng.integers(0, len(base), n)] ^ np.bitwise_or.reduce(flips, axis=1)
    pm = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    pm[::3] = ph[::3] ^ np.uint64(0x0F)  # symmetric pictures: the mirror is 4 bits from the hash
    ph[5] = ph[4]  # identical hashes
    return ph, pm


@pytest.mark.parametrize("method", ["all pairs", "multi-index"])
@pytest.mark.parametrize("radius", [0, 3, 10])
def test_hamming_search_equals_brute_force(method: str, radius: int) -> None:
    ph, pm = skewed_hashes(600, seed=1)
    left, right, distance, mirrored = pairs_within(ph, pm, radius, method)
    direct = popcount(ph[:, None] ^ ph[None, :])
    flipped = np.minimum(popcount(ph[:, None] ^ pm[None, :]), popcount(pm[:, None] ^ ph[None, :]))
    best = np.minimum(direct, flipped)
    expected = [(i, j) for i, j in itertools.combinations(range(600), 2) if best[i, j] <= radius]
    assert expected and list(zip(left.tolist(), right.tolist(), strict=True)) == expected
    assert np.array_equal(distance, best[left, right])
    assert np.array_equal(mirrored, flipped[left, right] < direct[left, right])


def test_hamming_search_plan_narrows_the_radius_to_fit_its_budget() -> None:
    ph, pm = skewed_hashes(3000, seed=2)
    every = 3000 * 2999 // 2
    plan = search_plan(ph, pm, 16, budget=every)
    assert (plan.radius, plan.method, plan.comparisons) == (16, "all pairs", every)
    budget = every // 50
    narrowed = search_plan(ph, pm, 16, budget=budget)
    assert narrowed.method == "multi-index" and 0 <= narrowed.radius < 16 and narrowed.comparisons <= budget
    one_more = search_plan(ph, pm, narrowed.radius + 1, budget=every - 1)  # the next radius, counted
    assert one_more.radius == narrowed.radius + 1 and one_more.comparisons > budget
    same = np.full(3000, 7, dtype=np.uint64)
    assert search_plan(same, same, 16, budget=every // 2).radius == -1  # not even identical hashes fit


def test_pairs_beyond_the_searched_radius_come_from_the_graph() -> None:
    c = Collection(filler=60)
    v = c.rng.standard_normal(D)
    original = c.add(v, ph=0x0F0F_0F0F_0F0F_0F0F)
    copy = c.add(near(v, c.rng, 0.01), ph=0x0F0F_0F0F_0F0F_0F0F ^ 0x3FF)  # 10 bits, and the nearest neighbour
    stranger = c.add(c.rng.standard_normal(D), ph=0x0F0F_0F0F_0F0F_0F0F ^ (0x3FF << 40))  # 10 bits, unrelated
    x, signals, full, _ = c.build()
    narrow = duplicate_candidates(exact_graph(x, 10), x, signals, hamming_searched=4)
    assert (full.hamming_searched, narrow.hamming_searched) == (16, 4)
    assert duplicate_clusters(narrow, x, signals).hamming_searched == 4  # the page says how far it searched
    pairs = {(int(a), int(b)) for a, b in zip(narrow.left, narrow.right, strict=True)}
    assert (original, copy) in pairs and (original, stranger) not in pairs
    assert (original, stranger) in set(zip(full.left.tolist(), full.right.tolist(), strict=True))


def test_distances_to_one_image_take_the_closer_of_direct_and_mirrored() -> None:
    rng = np.random.default_rng(5)
    stored, mirrors = rng.integers(0, 2**63, (2, 500), dtype=np.uint64)
    own, own_mirror = np.uint64(stored[7] ^ np.uint64(0b101)), np.uint64(mirrors[9] ^ np.uint64(1))
    stored[11] = own_mirror  # a flipped copy: distance 0 through the mirror
    distance, mirrored = distances_to(int(own), int(own_mirror), stored, mirrors)
    direct = popcount(stored ^ own)
    flipped = np.minimum(popcount(mirrors ^ own), popcount(stored ^ own_mirror))
    np.testing.assert_array_equal(distance, np.minimum(direct, flipped))
    np.testing.assert_array_equal(mirrored, flipped < direct)
    assert (distance[7], mirrored[7]) == (2, False) and (distance[11], mirrored[11]) == (0, True)


def test_hashes_from_hex_refuses_malformed_hashes() -> None:
    assert hashes_from_hex(["ffffffffffffffff", "0000000000000001"]).tolist() == [2**64 - 1, 1]
    for bad in (["abc"], ["zzzzzzzzzzzzzzzz"]):
        with pytest.raises(ValueError):
            hashes_from_hex(bad)


# clusters ---------------------------------------------------------------------------------------

def test_known_duplicate_cluster_is_found_whole_and_alone() -> None:
    c = Collection()
    base = c.rng.standard_normal(D)
    first = c.add(base, ph=0x1234_5678_9ABC_DEF0, size=(200, 100))
    copies = [c.add(near(base, c.rng, 0.01), ph=0x1234_5678_9ABC_DEF0 ^ (1 << b), size=(100, 50)) for b in (3, 40, 60)]
    _, _, _, report = c.build(COSINE)
    assert len(report.clusters) == 1
    cluster = report.clusters[0]
    assert set(cluster.members) == {first, *copies}
    assert cluster.representative == first  # the largest resolution
    assert all("phash" in s and "cosine" in s for s in cluster.signals_to_representative[1:])


def test_representative_is_largest_then_earliest_and_members_follow_similarity() -> None:
    c = Collection()
    base = c.rng.standard_normal(D)
    early = c.add(near(base, c.rng, 0.02), size=(300, 200))
    close = c.add(near(base, c.rng, 0.005), size=(100, 100))
    late = c.add(near(base, c.rng, 0.02), size=(200, 300))
    farther = c.add(near(base, c.rng, 0.06), size=(100, 100))
    _, _, _, report = c.build(COSINE)
    cluster = report.clusters[0]
    assert cluster.representative == early  # same pixel count as `late`, created first
    assert cluster.members[1:] == tuple(sorted((close, late, farther), key=lambda m: -cluster.cosine_to_representative[
        cluster.members.index(m)]))
    assert list(cluster.cosine_to_representative) == sorted(cluster.cosine_to_representative, reverse=True)


def test_three_unrelated_images_with_two_borderline_links_do_not_chain() -> None:
    c = Collection()
    a_hash = 0x0F0F_0F0F_0F0F_0F0F
    a = c.add(c.rng.standard_normal(D), ph=a_hash, size=(400, 400))
    b = c.add(c.rng.standard_normal(D), ph=a_hash ^ (0b111111 << 4))  # 6 bits from a: a borderline link
    far = c.add(c.rng.standard_normal(D), ph=a_hash ^ (0b111111 << 4) ^ (0b111111 << 30))  # 6 from b, 12 from a
    _, _, candidates, report = c.build(DuplicateThresholds(similarity=0.99, hamming=6, agree_hamming=6))
    accepted = {(p.left, p.right) for p in duplicate_pairs(candidates, report.thresholds)}
    assert {(a, b), (b, far)} <= accepted and (a, far) not in accepted
    assert [set(cl.members) for cl in report.clusters] == [{a, b}]  # `far` matches b only, not the representative
    cluster = report.clusters[0]
    assert (cluster.weakest_link.left, cluster.weakest_link.right) == (a, b)
    assert cluster.signals_to_representative[1] == ("phash",) and len(cluster.links) == 1


def with_pixel_scores(candidates, scores: dict[tuple[int, int], float], other: float = 0.5):
    """The candidates with the given pixel scores for those pairs and `other` for every other pair."""
    pixel = np.full(len(candidates), other, dtype=np.float32)
    for (a, b), score in scores.items():
        pixel[(candidates.left == min(a, b)) & (candidates.right == max(a, b))] = score
    return replace(candidates, pixel_score=pixel)


def test_an_image_goes_with_the_copy_it_matches_best_not_a_look_alike_representative() -> None:
    c = Collection()
    h = 0x0F0F_0F0F_0F0F_0F0F
    a = c.add(c.rng.standard_normal(D), ph=h, size=(400, 400))
    a_copy = c.add(c.rng.standard_normal(D), ph=h ^ 0b1)
    sibling = c.add(c.rng.standard_normal(D), ph=h ^ (0b111 << 8))  # 3 bits from a: a look-alike
    sibling_copy = c.add(c.rng.standard_normal(D), ph=h ^ (0b111 << 8) ^ (0b1 << 40))
    x, signals, candidates, _ = c.build()
    scores = {(a, a_copy): 0.99, (a, sibling): 0.95, (sibling, sibling_copy): 0.99}
    report = duplicate_clusters(with_pixel_scores(candidates, scores), x, signals)
    assert {(p.left, p.right) for p in duplicate_pairs(with_pixel_scores(candidates, scores))} == set(scores)
    assert sorted(cl.members for cl in report.clusters) == [(a, a_copy), (sibling, sibling_copy)]
    # without a copy of its own, the look-alike stays with the representative it is linked to
    alone = duplicate_clusters(with_pixel_scores(candidates, {**scores, (sibling, sibling_copy): 0.5}), x, signals)
    assert [set(cl.members) for cl in alone.clusters] == [{a, a_copy, sibling}]
    # matching another member of the star better than the representative keeps it in the star
    inside = {**scores, (sibling, sibling_copy): 0.5, (a_copy, sibling): 0.99}
    assert [set(cl.members) for cl in duplicate_clusters(with_pixel_scores(candidates, inside), x, signals).clusters] \
        == [{a, a_copy, sibling}]


def test_each_pair_names_the_signal_that_matched() -> None:
    c = Collection()
    v = c.rng.standard_normal(D)
    same_bytes = (c.add(v, sha="S"), c.add(c.rng.standard_normal(D), sha="S"))
    same_pixels = (c.add(c.rng.standard_normal(D), pix="P"), c.add(c.rng.standard_normal(D), pix="P"))
    flipped = (c.add(c.rng.standard_normal(D), ph=0xAAAA, pm=0x5555), c.add(c.rng.standard_normal(D), ph=0x5555))
    w = c.rng.standard_normal(D)
    by_cosine = (c.add(w), c.add(near(w, c.rng, 0.001)))
    _, _, candidates, _ = c.build(COSINE)
    signals = {(p.left, p.right): p for p in duplicate_pairs(candidates, COSINE)}
    assert "same_bytes" in signals[same_bytes].signals
    assert signals[same_pixels].signals[:1] == ("same_pixels",)
    assert signals[flipped].signals == ("phash",) and signals[flipped].mirrored
    assert signals[flipped].phash_distance == 0
    assert "cosine" in signals[by_cosine].signals and "phash" not in signals[by_cosine].signals


def test_pixel_bar_rises_with_the_pairs_phash_distance() -> None:
    distance = np.array([2, 14, 14], dtype=np.uint8)
    pixels = np.array([0.9, 0.9, 0.97], dtype=np.float32)
    none = np.full(3, np.nan)
    t = DuplicateThresholds()
    verdicts = judge_pairs(np.zeros(3), distance, none, np.zeros(3, bool), t, pixels)
    # 0.9 confirms hashes 2 bits apart, not 14 bits apart; there it takes pixels + 14 bits' worth more
    assert verdicts.by_hash.tolist() == [True, False, True]
    assert t.pixels + 2 * t.pixels_per_bit <= 0.9 < t.pixels + 14 * t.pixels_per_bit < 0.97


def test_an_image_that_resembles_many_others_needs_a_pair_far_above_them() -> None:
    # image 0 is simple line art: it scores 0.93 with five unrelated drawings (1-5); image 6 is a
    # photo with no such look-alikes; each has one more candidate (7 and 8) scoring 0.94
    left = np.array([0, 0, 0, 0, 0, 0, 6], dtype=np.int32)
    right = np.array([1, 2, 3, 4, 5, 7, 8], dtype=np.int32)
    pixels = np.array([0.93] * 5 + [0.94, 0.94], dtype=np.float32)
    typical = neighbour_scores(9, left, right, pixels)
    assert typical[0] == pytest.approx(0.93) and np.isinf(typical[6])
    neighbour = np.maximum(typical[left], typical[right])
    t = DuplicateThresholds()
    for bits, expected in ((10, [False, True]), (3, [True, True])):  # within 4 bits: the same picture, exempt
        distance = np.full(7, bits, dtype=np.uint8)
        verdicts = judge_pairs(np.zeros(7), distance, np.full(7, np.nan), np.zeros(7, bool), t, pixels, neighbour)
        assert verdicts.accepted[5:].tolist() == expected
    off = DuplicateThresholds(neighbour_margin=-1.0)
    verdicts = judge_pairs(np.zeros(7), np.full(7, 10, np.uint8), np.full(7, np.nan), np.zeros(7, bool), off, pixels,
                           neighbour)
    assert verdicts.accepted[5]


def test_rule_both_needs_both_signals_and_either_needs_one() -> None:
    c = Collection()
    v = c.rng.standard_normal(D)
    hash_only = (c.add(c.rng.standard_normal(D), ph=0xFF), c.add(c.rng.standard_normal(D), ph=0xFE))
    both = (c.add(v, ph=0xF000), c.add(near(v, c.rng, 0.001), ph=0xF001))
    _, _, candidates, _ = c.build()
    either = {(p.left, p.right) for p in duplicate_pairs(candidates, DuplicateThresholds(0.95, rule="either"))}
    strict = {(p.left, p.right) for p in duplicate_pairs(candidates, DuplicateThresholds(0.95, rule="both"))}
    assert {hash_only, both} <= either
    assert both in strict and hash_only not in strict


def test_moving_a_threshold_towards_strict_never_adds_pairs() -> None:
    c = Collection(filler=150, seed=3)
    for _ in range(15):
        v = c.rng.standard_normal(D)
        h = int(c.rng.integers(0, 2**63))
        for _ in range(3):
            c.add(near(v, c.rng, float(c.rng.uniform(0.0, 0.3))), ph=h ^ int(c.rng.integers(0, 2**14)))
    _, _, candidates, _ = c.build()
    for rule in ("either", "both"):
        previous = None
        for similarity in np.linspace(0.3, 1.0, 15):
            pairs = {(p.left, p.right) for p in duplicate_pairs(candidates, DuplicateThresholds(similarity, 8, rule))}
            assert previous is None or pairs <= previous
            previous = pairs
        previous = None
        for hamming in range(12, -1, -1):
            pairs = {(p.left, p.right) for p in duplicate_pairs(candidates, DuplicateThresholds(0.9, hamming, rule))}
            assert previous is None or pairs <= previous
            previous = pairs


def test_thresholds_outside_the_gathered_range_are_refused() -> None:
    _, _, candidates, _ = Collection().build()
    with pytest.raises(InvalidRequest, match="similarity_floor"):
        duplicate_pairs(candidates, DuplicateThresholds(similarity=0.1))
    with pytest.raises(InvalidRequest, match="hamming_max"):
        duplicate_pairs(candidates, DuplicateThresholds(hamming=20))
    with pytest.raises(InvalidRequest, match="rule"):
        DuplicateThresholds(rule="any")


def test_similarity_scale_is_calibrated_on_the_collections_own_neighbours() -> None:
    rng = np.random.default_rng(4)
    x = unit(np.ones(D) * 3 + rng.standard_normal((200, D)))  # anisotropic: every cosine is high
    graph = exact_graph(x, 12)
    scale = similarity_scale(graph)
    assert scale.reference_cosine == pytest.approx(np.median(graph.similarities[:, 9]))
    assert scale.similarity(1.0) == 1.0 and abs(float(scale.similarity(scale.reference_cosine))) < 1e-12
    assert sum(scale.histogram_counts) == 200
    assert float(scale.cosine(scale.similarity(0.97))) == pytest.approx(0.97)


def test_threshold_examples_straddle_the_threshold() -> None:
    _, _, candidates, _ = Collection(filler=120).build()
    t = DuplicateThresholds(similarity=0.5)
    inside, outside = threshold_examples(candidates, t, "cosine", 3)
    assert all(p.similarity >= 0.5 for p in inside) and all(p.similarity < 0.5 for p in outside)


def test_results_survive_pickling() -> None:
    _, _, candidates, report = Collection().build()
    assert pickle.loads(pickle.dumps(report)) == report
    again = pickle.loads(pickle.dumps(candidates))
    assert np.array_equal(again.left, candidates.left)


def test_an_embedding_with_another_scale_gives_the_same_default_clusters() -> None:
    c = Collection(filler=80, seed=5)
    groups = []
    for _ in range(8):  # groups of copies: hashes a few bits apart, embeddings near
        v, h = c.rng.standard_normal(D), int(c.rng.integers(0, 2**63))
        groups.append({c.add(near(v, c.rng, 0.05), ph=h ^ (1 << int(c.rng.integers(0, 64)))) for _ in range(3)})
    _, _, _, report = c.build()
    offset = np.full(D, 3.0)  # a constant offset before normalising: every cosine crowds towards 1
    c.vectors = [unit(v + offset) for v in c.vectors]
    _, _, candidates, shifted = c.build()
    assert np.median(candidates.cosine) > 0.8
    assert [set(cl.members) for cl in shifted.clusters] == [set(cl.members) for cl in report.clusters]
    assert all(group in [set(cl.members) for cl in report.clusters] for group in groups)
