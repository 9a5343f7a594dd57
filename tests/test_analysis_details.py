"""The close look (`core.analysis.details`): copies pass, siblings that differ in one place do not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from core.analysis import ImageSignals, duplicate_candidates, duplicate_clusters
from core.analysis.details import (
    DEFAULT_DETAIL_AGREEMENT,
    DEFAULT_LOCAL_DIFFERENCE,
    DEFAULT_LOCAL_DIFFERENCE_PER_BIT,
    DETAIL_SIDE,
    close_looks,
)
from core.analysis.duplicates import DuplicateThresholds, judge_pairs
from core.analysis.neighbours import exact_graph
from core.images import detail_picture, prepare_image
from core.synthetic import save_as, transform
from tests.drawings import badge, folder_icon

COPY_KINDS = ("resize", "jpeg", "brightness", "rotation", "watermark", "flip")


def picture(img: Image.Image, fmt: str = "PNG") -> np.ndarray:
    """What the analysis compares: ingest's own thumbnail, as a close-up picture."""
    prepared = prepare_image(save_as(img, fmt, quality=40), max_bytes=10 << 20, max_pixels=10**8)
    return detail_picture(prepared.thumbnail, DETAIL_SIDE)


def small_collection(images: list[Image.Image], seed: int) -> tuple[ImageSignals, np.ndarray, np.ndarray]:
    """Signals, random unit embeddings and close-up pictures of `images` as ingest stores them, with
    eight noise fillers after them (the embedding plays no part here)."""
    filler = [Image.effect_noise((64, 64), 40 + 5 * i).convert("RGB") for i in range(8)]
    prepared = [prepare_image(save_as(img, "PNG"), max_bytes=10 << 20, max_pixels=10**8) for img in images + filler]
    signals = ImageSignals.from_columns(
        sha256=[p.sha256 for p in prepared], pixel_sha256=[p.pixel_sha256 for p in prepared],
        phash=[p.phash for p in prepared], phash_mirror=[p.phash_mirror for p in prepared],
        width=[p.width for p in prepared], height=[p.height for p in prepared],
        sketch=[p.sketch for p in prepared])
    x = np.random.default_rng(seed).standard_normal((len(prepared), 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return signals, x, np.stack([detail_picture(p.thumbnail, DETAIL_SIDE) for p in prepared])


def test_copies_show_little_local_difference_and_a_sibling_shows_much() -> None:
    rng = np.random.default_rng(0)
    original = folder_icon("note")
    copies = [picture(transform(original, kind, rng), "JPEG" if kind == "jpeg" else "PNG") for kind in COPY_KINDS]
    base = picture(original)
    copy_diff = close_looks(np.stack([base] * len(copies)), np.stack(copies)).difference
    sibling_diff = close_looks(base[None], picture(folder_icon("fox"))[None]).difference
    assert (copy_diff <= DEFAULT_LOCAL_DIFFERENCE).all(), dict(zip(COPY_KINDS, copy_diff.round(2), strict=True))
    assert sibling_diff[0] > DEFAULT_LOCAL_DIFFERENCE
    # the whole pictures still agree closely: only a look at one place tells them apart
    whole = np.corrcoef(base.ravel().astype(float), picture(folder_icon("fox")).ravel().astype(float))[0, 1]
    assert whole > 0.9


def test_a_flat_picture_is_not_compared_and_bad_shapes_are_refused() -> None:
    flat = np.full((1, DETAIL_SIDE, DETAIL_SIDE), 200, dtype=np.uint8)
    drawn = picture(folder_icon("note"))[None]
    assert np.isnan(close_looks(flat, drawn).difference).all() and np.isnan(close_looks(drawn, flat).difference).all()
    with pytest.raises(ValueError, match="same shape"):
        close_looks(drawn, drawn[:, :32, :32])


def test_the_close_look_rejects_a_sibling_pair_the_sketches_confirm_and_keeps_the_copy() -> None:
    rng = np.random.default_rng(1)
    images = [folder_icon("note"), transform(folder_icon("note"), "watermark", rng), folder_icon("fox")]
    signals, x, pictures = small_collection(images, seed=2)
    graph = exact_graph(x, 5)
    asked: list[np.ndarray] = []

    def details(rows: np.ndarray) -> np.ndarray:
        asked.append(rows)
        return pictures[rows]

    looked = duplicate_candidates(graph, x, signals, details=details)
    blind = duplicate_candidates(graph, x, signals)
    clusters = {c.members for c in duplicate_clusters(looked, x, signals).clusters}
    clusters_blind = {c.members for c in duplicate_clusters(blind, x, signals).clusters}
    assert (0, 1, 2) in clusters_blind or (0, 2, 1) in clusters_blind  # whole sketches alone take the sibling in
    assert clusters == {(0, 1)}  # the watermarked copy stays, the sibling with another emblem goes
    assert asked and set(np.concatenate(asked)) <= {0, 1, 2}  # only pairs the sketches confirm are looked at
    off = duplicate_clusters(looked, x, signals, DuplicateThresholds(local_difference=1e9))
    assert {c.members for c in off.clusters} == clusters_blind


def test_look_alikes_sharing_a_silhouette_differ_in_their_fine_details_and_copies_do_not() -> None:
    dice, knob = picture(badge("dice")), picture(badge("knob"))
    look = close_looks(dice[None], knob[None])
    assert np.corrcoef(dice.ravel().astype(float), knob.ravel().astype(float))[0, 1] > 0.95
    assert look.difference[0] < DEFAULT_LOCAL_DIFFERENCE - 16 * DEFAULT_LOCAL_DIFFERENCE_PER_BIT  # passes at 16 bits
    assert look.detail[0] < DEFAULT_DETAIL_AGREEMENT
    rng = np.random.default_rng(0)
    for face in ("dice", "knob"):
        copies = [picture(transform(badge(face), kind, rng), "JPEG" if kind == "jpeg" else "PNG")
                  for kind in COPY_KINDS]
        agreement = close_looks(np.stack([picture(badge(face))] * len(copies)), np.stack(copies)).detail
        assert not (agreement < DEFAULT_DETAIL_AGREEMENT).any(), dict(zip(COPY_KINDS, agreement.round(2), strict=True))
    # judged: the fine details refuse what the local difference alone would accept, unless turned off
    args = (np.zeros(3), np.full(3, 12, np.uint8), np.full(3, np.nan), np.zeros(3, bool))
    pixels, local = np.full(3, 0.99, np.float32), np.full(3, 0.1, np.float32)
    detail = np.array([look.detail[0], 0.95, np.nan], np.float32)
    assert judge_pairs(*args, DuplicateThresholds(), pixels, None, local, detail=detail).accepted.tolist() == [
        False, True, True]
    assert judge_pairs(*args, DuplicateThresholds(detail_agreement=-1.0), pixels, None, local,
                       detail=detail).accepted.all()
    with pytest.raises(Exception, match="detail_agreement"):
        DuplicateThresholds(detail_agreement=1.5)


def test_local_difference_is_judged_only_where_it_was_measured() -> None:
    t = DuplicateThresholds()
    args = (np.zeros(3), np.full(3, 6, np.uint8), np.full(3, np.nan), np.zeros(3, bool), t,
            np.full(3, 0.99, np.float32), None)
    verdicts = judge_pairs(*args, np.array([0.3, 2.0, np.nan], np.float32))
    assert verdicts.accepted.tolist() == [True, False, True]
    with pytest.raises(Exception, match="local_difference"):
        DuplicateThresholds(local_difference=0.0)


def test_a_crop_window_renders_that_part_of_the_picture() -> None:
    from core.analysis.details import window_pictures

    y, x = np.mgrid[0:DETAIL_SIDE, 0:DETAIL_SIDE]
    pattern = ((x * 3 + y * y // 16) % 256).astype(np.uint8)
    quarter = np.asarray(Image.fromarray(pattern[32:, :32]).resize((DETAIL_SIDE, DETAIL_SIDE), Image.Resampling.BILINEAR),
                         dtype=float)
    rendered = window_pictures(pattern[None], np.array([[0.5, 0.5, 0.0, 1.0]]))[0].astype(float)
    assert np.corrcoef(rendered.ravel(), quarter.ravel())[0, 1] > 0.98  # x from the left, y from the bottom
    whole = window_pictures(pattern[None], np.array([[1.0, 1.0, 0.5, 0.5]]))[0]
    assert np.abs(whole.astype(int) - pattern).max() <= 1


def test_a_crop_is_looked_at_in_its_window_and_judged_by_its_own_bar() -> None:
    signals, x, pictures = small_collection([folder_icon("note"), folder_icon("note").crop((10, 20, 240, 240))], seed=3)
    looked = duplicate_candidates(exact_graph(x, 5), x, signals, details=pictures.__getitem__)
    pair = int(np.flatnonzero((looked.left == 0) & (looked.right == 1))[0])
    assert looked.crop_score[pair] >= looked.pixel_score[pair] - 1e-6  # the crop scored this pair
    unaligned = close_looks(pictures[:1], pictures[1:2]).difference[0]
    assert looked.crop_local_difference[pair] < 0.3 < DEFAULT_LOCAL_DIFFERENCE < unaligned  # the window aligns it
    assert np.isnan(looked.local_difference[pair]) or looked.local_difference[pair] == pytest.approx(unaligned, abs=1e-4)
    assert {c.members for c in duplicate_clusters(looked, x, signals).clusters} == {(0, 1)}


def test_the_crop_signal_is_judged_by_its_window_and_the_other_signals_by_the_whole_pictures() -> None:
    t = DuplicateThresholds()
    # scored by the crop window: window looks 0.3, 0.8, 0.3; a slight crop the whole sketches score
    # better; a pair no crop scored
    crop = np.array([0.96, 0.96, 0.96, 0.94, np.nan], np.float32)
    pixels = np.array([0.96, 0.96, 0.96, 0.99, 0.99], np.float32)
    whole = np.array([np.nan, np.nan, 2.0, 1.5, 1.0], np.float32)
    window = np.array([0.3, 0.8, 0.3, np.nan, np.nan], np.float32)
    distance = np.array([20, 20, 6, 6, 6], np.uint8)
    verdicts = judge_pairs(np.zeros(5), distance, crop, np.zeros(5, bool), t, pixels, None, whole, window)
    assert t.local_difference - 6 * t.local_difference_per_bit < 1.0 and 0.3 < t.crop_local_difference < 0.8
    assert verdicts.by_crop.tolist() == [True, False, True, False, False]
    assert not verdicts.by_hash.any()  # the pHash routes: the whole pictures differ locally, the window aside
    assert verdicts.accepted.tolist() == [True, False, True, False, False]
    without_window = judge_pairs(np.zeros(5), distance, crop, np.zeros(5, bool), t, pixels, None, whole)
    assert without_window.by_crop.tolist() == [True, True, True, False, False]  # not looked at: the crop decides


def test_the_further_apart_the_hashes_the_closer_the_look_must_agree() -> None:
    """The same local difference confirms a pair whose hashes nearly agree and not one whose hashes
    are 14 bits apart, where siblings sharing a template sit; without the close look both pass."""
    t = DuplicateThresholds()
    distance = np.array([4, 14], np.uint8)
    pixels = np.array([0.99, 0.99], np.float32)
    look = np.full(2, 0.6, np.float32)
    assert t.local_difference - 14 * t.local_difference_per_bit < 0.6 < t.local_difference - 4 * t.local_difference_per_bit
    none = np.full(2, np.nan, np.float32)
    judged = judge_pairs(np.zeros(2), distance, none, np.zeros(2, bool), t, pixels, None, look)
    assert judged.by_hash.tolist() == [True, False]
    assert judge_pairs(np.zeros(2), distance, none, np.zeros(2, bool), t, pixels, None, none).by_hash.all()
    flat = DuplicateThresholds(local_difference_per_bit=0.0)
    assert judge_pairs(np.zeros(2), distance, none, np.zeros(2, bool), flat, pixels, None, look).by_hash.all()
    with pytest.raises(Exception, match="local_difference_per_bit"):
        DuplicateThresholds(local_difference_per_bit=-0.01)


def test_beyond_any_phash_threshold_only_a_close_look_that_agrees_makes_a_duplicate() -> None:
    """A brightened transparent icon can lose 20 pHash bits and keep its sketch and details: the
    `sketch` signal takes it, but only where the pictures were looked at and agree within the bar
    for that distance, the sketches clear theirs, and never inside the pHash slider's own range."""
    t = DuplicateThresholds(hamming=8)
    distance = np.array([20, 20, 20, 20, 12], np.uint8)
    pixels = np.array([0.99, 0.99, 0.99, 0.9, 0.99], np.float32)
    look = np.array([0.2, 0.5, np.nan, 0.2, 0.1], np.float32)
    bar = t.local_difference - 20 * t.local_difference_per_bit
    assert 0.2 < bar < 0.5 and t.pixels + 20 * t.pixels_per_bit > 0.9
    verdicts = judge_pairs(np.zeros(5), distance, np.full(5, np.nan), np.zeros(5, bool), t, pixels, None, look)
    assert verdicts.by_sketch.tolist() == [True, False, False, False, False]
    assert verdicts.accepted.tolist() == [True, False, False, False, False]  # 12 bits: the slider's 8 decides
    assert verdicts.signals(0, False, False) == ("sketch",)
    both = DuplicateThresholds(rule="both", similarity=0.5, hamming=8)
    assert judge_pairs(np.ones(5), distance, np.full(5, np.nan), np.zeros(5, bool), both, pixels, None,
                       look).accepted.tolist() == [True, False, False, False, False]


def test_a_copy_whose_hash_lost_twenty_bits_joins_its_original_by_sketch_and_a_sibling_does_not() -> None:
    """Through candidates and clusters: the copy's and the sibling's stored pHashes are set 20 bits
    from the original's (as brightening transparent line art does), beyond any pHash threshold.
    The copy's pictures agree up close and it joins by `sketch`; the sibling's differ in the emblem
    and it stays out; without the close look neither joins."""
    images = [folder_icon("note"), folder_icon("note").resize((160, 160), Image.Resampling.LANCZOS), folder_icon("fox")]
    signals, x, pictures = small_collection(images, seed=2)
    x[1:3] = x[0] + 0.05 * x[1:3]  # the embedding proposes both pairs
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    far = replace(signals, phash=signals.phash.copy(), phash_mirror=signals.phash_mirror.copy())
    for i, lost in ((1, np.uint64((1 << 20) - 1)), (2, np.uint64(((1 << 20) - 1) << 20))):  # and 40 bits apart
        far.phash[i], far.phash_mirror[i] = signals.phash[0] ^ lost, signals.phash_mirror[0] ^ lost
    graph = exact_graph(x, 5)
    looked = duplicate_candidates(graph, x, far, details=pictures.__getitem__)
    pairs = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(looked.left, looked.right, strict=True))}
    assert looked.phash_distance[pairs[(0, 1)]] == looked.phash_distance[pairs[(0, 2)]] == 20
    assert looked.pixel_score[pairs[(0, 2)]] > DuplicateThresholds().pixels + 20 * DuplicateThresholds().pixels_per_bit
    no_crops = DuplicateThresholds(crop=1.0)  # the windows still match the original's true hash
    report = duplicate_clusters(looked, x, far, no_crops)
    assert [(c.members, c.signals_to_representative) for c in report.clusters] == [((0, 1), ((), ("sketch",)))]
    assert "sketch" in duplicate_clusters(looked, x, far).clusters[0].signals_to_representative[1]
    assert duplicate_clusters(duplicate_candidates(graph, x, far), x, far, no_crops).clusters == ()


def test_a_crop_window_placed_at_sketch_resolution_is_refined_before_the_close_look() -> None:
    """A window half a sketch pixel off (two of the close look's pixels) or 6% too large shows a
    local difference a sibling would; refined it finds the crop again, flipped or not, and a
    window already right stays put."""
    from core.analysis.details import refine_windows, window_pictures

    outer = picture(folder_icon("note"))[None]
    true = np.array([[0.8, 0.8, 0.25, 0.75]], np.float32)
    inner = window_pictures(outer, true)
    moved = np.array([[0.8, 0.8, 0.25 + 2 / 64 / 0.2, 0.75 - 1 / 64 / 0.2]], np.float32)  # 2 px right, 1 up
    grown = np.array([[0.8 * 1.06, 0.8 * 1.06, 0.25, 0.75]], np.float32)
    for off in (moved, grown):
        for crop in (inner, inner[:, :, ::-1].copy()):
            placed = close_looks(window_pictures(outer, off), crop).difference[0]
            refined = close_looks(window_pictures(outer, refine_windows(outer, crop, off)), crop).difference[0]
            assert refined < DuplicateThresholds().crop_local_difference < placed
    assert np.allclose(refine_windows(outer, inner, true), true, atol=1e-6)


def test_a_pair_the_whole_pictures_were_not_compared_for_is_confirmed_by_its_crop_windows_look() -> None:
    """Whole sketches below the close-look floor, a crop window scoring 0.96: the pHash signal
    leans on that window, so its look decides (before, such a pair passed unlooked)."""
    t = DuplicateThresholds()
    distance = np.full(2, 14, np.uint8)
    crop = pixels = np.full(2, 0.96, np.float32)
    window = np.array([0.2, 0.9], np.float32)
    assert t.local_difference - 14 * t.local_difference_per_bit < 0.9
    verdicts = judge_pairs(np.zeros(2), distance, crop, np.zeros(2, bool), t, pixels, None,
                           np.full(2, np.nan, np.float32), window)
    assert verdicts.by_hash.tolist() == [True, False]
