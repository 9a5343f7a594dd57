"""Whether another runtime or precision changes what an analyst sees, judged against torch fp32.

A cosine between two embeddings of one image says little: small errors everywhere can still reorder
neighbours near a threshold (bf16 and int8 both do, on the analysis benchmark, at cosines above
0.9999). So a candidate is compared on outcomes: the duplicate pairs the product reports (default
thresholds), the top of the anomaly ranking (default method), and search top-10 for every image used
as a query. Candidates embed the same batches in turn, so a machine busy with other work slows all of
them alike, and the verdict is a :class:`core.runtimes.Decision`.

Two callers judge this way: ``make bench`` (every runtime, on the analysis benchmark's labelled
images) and the model's start-up when ``PRECISION=auto`` finds no recorded decision (fp32 against the
device's lower precision, on :func:`probe_images`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from core.analysis import ImageSignals, anomaly_scores, build_graph, duplicate_candidates, duplicate_clusters
from core.images import PreparedImage, prepare_image
from core.runtimes import TORCH_FP32, Candidate, Decision, ImageEncoder, Measurement
from core.synthetic import COPY_KINDS, clipart, photo, save_as, transform

SEARCH_K = 10
TOP_ANOMALIES = 20
PROBE_ORIGINALS = 32  # each with a near-duplicate copy: 64 images, enough for a top-20 to mean something
_PROBE_LIMIT = 10**8  # bytes and pixels: the probe's own images are far below any limit

# an encoder and a preprocessed batch -> L2-normalised float32 embeddings on the host
Encode = Callable[[ImageEncoder, torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class Outcomes:
    """What an analyst sees from one set of embeddings."""

    vectors: np.ndarray
    duplicate_pairs: frozenset[tuple[int, int]]
    top_anomalies: tuple[int, ...]
    search: np.ndarray  # (n, SEARCH_K) neighbours of every image, itself excluded


@dataclass(frozen=True)
class Agreement:
    search_overlap: float  # mean share of fp32's search top-10 found in the candidate's
    duplicate_pairs_changed: int  # pairs reported by one and not the other
    top_anomalies_changed: int  # of the top TOP_ANOMALIES, how many are not in fp32's
    min_cosine: float

    @property
    def same_duplicates(self) -> bool:
        return self.duplicate_pairs_changed == 0

    @property
    def same_top_anomalies(self) -> bool:
        return self.top_anomalies_changed == 0


@dataclass(frozen=True)
class RuntimeResult:
    """One candidate's speed and agreement, measured beside torch fp32 on the same batches."""

    candidate: Candidate
    images_per_s: float
    agreement: Agreement


def pairs_from_groups(groups: Iterable[Iterable[int]]) -> set[tuple[int, int]]:
    """All pairs inside each predicted group (a cluster, or a file and its reported duplicates)."""
    return {p for g in groups for p in combinations(sorted(set(g)), 2)}


def outcomes(vectors: np.ndarray, signals: ImageSignals) -> Outcomes:
    graph = build_graph(vectors)
    report = duplicate_clusters(duplicate_candidates(graph, vectors, signals), vectors, signals)
    scores = anomaly_scores(vectors, graph, same_image=signals.bytes_group).scores
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    search = np.argsort(-similarity, axis=1, kind="stable")[:, :SEARCH_K]
    return Outcomes(
        vectors=vectors,
        duplicate_pairs=frozenset(pairs_from_groups(c.members for c in report.clusters)),
        top_anomalies=tuple(int(i) for i in np.argsort(-scores, kind="stable")[:TOP_ANOMALIES]),
        search=search,
    )


def agreement(reference: Outcomes, candidate: Outcomes) -> Agreement:
    overlap = np.mean([len(set(a) & set(b)) / SEARCH_K for a, b in zip(reference.search, candidate.search, strict=True)])
    return Agreement(
        search_overlap=float(overlap),
        duplicate_pairs_changed=len(reference.duplicate_pairs ^ candidate.duplicate_pairs),
        top_anomalies_changed=len(set(reference.top_anomalies) - set(candidate.top_anomalies)),
        min_cosine=float((reference.vectors * candidate.vectors).sum(axis=1).min()),
    )


def signals_of(prepared: Sequence[PreparedImage]) -> ImageSignals:
    """The duplicate view's signals (hashes, sizes, sketches) of images prepared as ingest prepares them."""
    return ImageSignals.from_columns(
        sha256=[p.sha256 for p in prepared], pixel_sha256=[p.pixel_sha256 for p in prepared],
        phash=[p.phash for p in prepared], phash_mirror=[p.phash_mirror for p in prepared],
        width=[p.width for p in prepared], height=[p.height for p in prepared], sketch=[p.sketch for p in prepared],
    )


def compare_in_turn(encoders: Mapping[Candidate, ImageEncoder], batches: Sequence[torch.Tensor],
                    signals: ImageSignals, encode: Encode) -> list[RuntimeResult]:
    """Every encoder embeds each batch in turn (after one warm-up call, which picks kernels for the
    shape), timed per call; then each is judged against torch fp32, which must be among them."""
    if TORCH_FP32 not in encoders:
        raise ValueError("torch fp32 is the reference and must be compared too")
    for encoder in encoders.values():
        encode(encoder, batches[0])
    seconds = dict.fromkeys(encoders, 0.0)
    vectors: dict[Candidate, list[np.ndarray]] = {c: [] for c in encoders}
    for batch in batches:
        for candidate, encoder in encoders.items():
            began = time.perf_counter()
            vectors[candidate].append(encode(encoder, batch))
            seconds[candidate] += time.perf_counter() - began
    count = sum(len(b) for b in batches)
    reference = outcomes(np.concatenate(vectors[TORCH_FP32]), signals)
    return [
        RuntimeResult(c, count / seconds[c], agreement(reference, outcomes(np.concatenate(vectors[c]), signals)))
        for c in encoders
    ]


def decision_from(results: Sequence[RuntimeResult]) -> Decision:
    """The fastest candidate that changes nothing for an analyst and clearly beats torch fp32."""
    base = next(r.images_per_s for r in results if r.candidate == TORCH_FP32)
    return Decision.from_measurements(tuple(
        Measurement(r.candidate, r.images_per_s, r.images_per_s / base, r.agreement.search_overlap,
                    r.agreement.same_duplicates, r.agreement.same_top_anomalies, r.agreement.min_cosine)
        for r in results
    ))


def probe_images(originals: int = PROBE_ORIGINALS, seed: int = 0) -> list[PreparedImage]:
    """A small, fixed image set for judging a precision at start-up: photos and clip art with
    transparency alternately, each followed by a near-duplicate copy (every edit kind in turn), so
    there are duplicate pairs to keep or lose and neighbours to reorder. The same on every machine."""
    rng = np.random.default_rng(seed)
    files: list[bytes] = []
    for i in range(originals):
        image = photo(seed + i, size=(256, 192)) if i % 2 else clipart(rng)
        fmt = "PNG" if image.mode == "RGBA" else "JPEG"
        kind = COPY_KINDS[i % len(COPY_KINDS)]
        copy = transform(image, kind, rng)
        files += [save_as(image, fmt), save_as(copy, "JPEG", quality=40) if kind == "jpeg" else save_as(copy, fmt)]
    return [prepare_image(data, max_bytes=_PROBE_LIMIT, max_pixels=_PROBE_LIMIT) for data in files]
