"""The anomaly part of `benchmarks/analysis.py`: every method and the quality flags on labelled
folders (synthetic, and three draws of real icons with planted anomalies of every kind), cleanvision
beside ours.

Per method: ROC-AUC over all planted anomalies, precision@P (P = how many are planted) and each
kind's ROC-AUC against the normal images. Per detector of issues (our flags; cleanvision's issue
types, duplicates left out since they are no anomaly of a single image): how many normal images it
flags, and the share of each planted kind it flags.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.analysis_metrics import precision_at, roc_auc

METHOD_ROWS = (("fused", None), ("embedding", None), ("properties", None), ("combined", None), ("knn", 30),
               ("knn", 5), ("mahalanobis", None), ("lof", 30), ("iforest", None))
CLEANVISION_ISSUES = ("dark", "light", "odd_aspect_ratio", "low_information", "blurry", "grayscale", "odd_size")


def anomaly_benchmarks(workdir: Path, table, device: str, real_seeds: tuple[int, ...]) -> None:
    """The synthetic folder, then each draw of `real_seeds` of real icons with planted anomalies."""
    from benchmarks.dataset_anomalies import build_anomaly_folder
    from benchmarks.dataset_images import build_folder

    synthetic = build_folder(workdir / "folder")
    _one(workdir, "synthetic (clip art and photo tiles; a microscopy group and loners)", workdir / "folder",
         [lab.file_name for lab in synthetic],
         np.array(["normal" if lab.kind in ("clipart", "photo") else lab.kind for lab in synthetic]), table, device)
    for seed in real_seeds:
        folder = workdir / ("real-anomalies" if seed == 0 else f"real-anomalies-seed{seed}")
        real = build_anomaly_folder(folder, workdir / "real-pool", seed=seed)
        _one(workdir, f"real icons with planted anomalies, draw {seed}", folder, [lab.file_name for lab in real],
             np.array([lab.kind for lab in real]), table, device)


def _one(workdir: Path, title: str, folder: Path, names: list[str], kind: np.ndarray, table, device: str) -> None:
    from benchmarks.analysis_features import compute_features
    from core.analysis import ImageSignals, anomaly_scores, build_graph
    from core.analysis.quality import FLAG_NAMES, quality_flags

    features = compute_features(folder, names, workdir / "cache")
    x = features.vectors
    signals = ImageSignals.from_columns(sha256=features.sha256, pixel_sha256=features.pixel_sha256,
                                        phash=features.phash, phash_mirror=features.phash_mirror,
                                        width=features.width, height=features.height, sketch=features.sketch)
    graph = build_graph(x, device=device)
    positive = kind != "normal"
    planted = sorted(set(kind[positive]))
    count = int(positive.sum())
    rows = []
    for method, k in METHOD_ROWS:
        t0 = time.perf_counter()
        s = anomaly_scores(x, graph, method=method, k=k, same_image=signals.pixels_group,
                           properties=features.properties).scores
        dt = time.perf_counter() - t0
        per_kind = [roc_auc(s[(kind == c) | ~positive], positive[(kind == c) | ~positive]) for c in planted]
        rows.append([method + (" (default)" if method == "fused" else "") + (f" k={k}" if k else ""),
                     roc_auc(s, positive), precision_at(s, positive, count), *per_kind, f"{dt:.2f}"])
    print(f"\n## Anomalies, {title}: {count} planted among {int((~positive).sum())} normal images\n")
    print(table(["method", "ROC-AUC", f"precision@{count}", *(f"AUC {c}" for c in planted), "seconds"], rows))

    flags = quality_flags(features.properties)
    detectors = [("ours: any flag (|z| >= 3.5 against the collection)", flags.flagged.any(axis=1))]
    detectors += [(f"ours: {name}", flags.flagged[:, j]) for j, name in enumerate(FLAG_NAMES)]
    cleanvision = _cleanvision(folder, names)
    detectors.append(("cleanvision: any issue", cleanvision.any(axis=1)))
    detectors += [(f"cleanvision: {name}", cleanvision[:, j]) for j, name in enumerate(CLEANVISION_ISSUES)]
    flag_rows = [[name, int(hit[~positive].sum()), *(float(hit[kind == c].mean()) for c in planted)]
                 for name, hit in detectors if hit.any()]
    print(f"\nIssue flags: normal images flagged (of {int((~positive).sum())}) and the share of each planted kind "
          "flagged (rows that flag nothing are left out)\n")
    print(table(["detector", "normal flagged", *planted], flag_rows))


def _cleanvision(folder: Path, names: list[str]) -> np.ndarray:
    """cleanvision's verdicts (its default thresholds), (n, len(CLEANVISION_ISSUES)) bool.

    cleanvision 0.3 fails on grey images with alpha (mode LA, common among icons); it reads a copy
    of the folder where those are stored as RGBA, the same pixels."""
    from cleanvision import Imagelab
    from PIL import Image

    logging.getLogger("cleanvision").setLevel(logging.WARNING)
    readable = folder.parent / f"{folder.name}-cleanvision"
    shutil.rmtree(readable, ignore_errors=True)
    readable.mkdir()
    for name in names:
        with Image.open(folder / name) as img:
            if img.mode in ("LA", "La", "PA") or (img.mode == "P" and "transparency" in img.info):
                img.convert("RGBA").save(readable / name)
            else:
                shutil.copyfile(folder / name, readable / name)
    lab = Imagelab(data_path=str(readable))
    lab.find_issues({name: {} for name in CLEANVISION_ISSUES}, verbose=False)
    issues = lab.issues
    by_path = {Path(p).name: i for i, p in enumerate(issues.index)}
    out = np.zeros((len(names), len(CLEANVISION_ISSUES)), dtype=bool)
    for j, name in enumerate(CLEANVISION_ISSUES):
        column = issues[f"is_{name}_issue"].to_numpy()
        for r, file_name in enumerate(names):
            if file_name in by_path:
                out[r, j] = bool(column[by_path[file_name]])
    return out
