"""Plain metric functions for the analysis benchmark (kept out of `core`)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from benchmarks.dataset_images import EXACT_KINDS, NEAR_KINDS, LabelledImage


def truth_pairs(labels: Sequence[LabelledImage]) -> set[tuple[int, int]]:
    """All pairs of files made from the same original."""
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab.base, []).append(i)
    return {p for members in groups.values() for p in combinations(sorted(members), 2)}


def precision_recall_f1(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float, float]:
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def recall_by_transform(labels: Sequence[LabelledImage], predicted: set[tuple[int, int]]) -> dict[str, float]:
    """Per transform kind: share of copies found together with their original."""
    original = {lab.base: i for i, lab in enumerate(labels) if lab.transform == "original"}
    out = {}
    for kind in NEAR_KINDS + EXACT_KINDS:
        copies = [i for i, lab in enumerate(labels) if lab.transform == kind]
        hits = [tuple(sorted((i, original[labels[i].base]))) in predicted for i in copies]
        out[kind] = float(np.mean(hits)) if hits else float("nan")
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores))


def precision_at(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, kind="stable")[:k]
    return float(positive[top].mean())
